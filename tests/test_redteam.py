"""Hostile programs. For each: the harness survives, the verdict is not a pass and says why,
nothing outside the program's directory changed, and nothing it started outlives it.

Fork bombs and kill(-1) run only once a probe in the same test saw a private PID namespace and
an unprivileged uid: anywhere else they would take the machine down.
"""
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from phi_eval.execution import Limits, Sandbox

MARKER = f"phi-eval-redteam-{uuid.uuid4().hex[:12]}"
SECRET = f"sk-redteam-{uuid.uuid4().hex}"
LIMITS = Limits(timeout_s=1.0, memory_mb=256, max_processes=32, file_size_mb=1, output_bytes=100_000)
NOT_PASSED = {"failed", "error", "timeout", "memory", "output_limit", "exited_early", "killed"}


@pytest.fixture(scope="module")
def sandbox():
    os.environ["OPENAI_API_KEY"] = SECRET  # the harness holds a secret the programs must not see
    try:
        with Sandbox(workers=2, limits=LIMITS) as box:
            box.started_workers = [worker._process.pid for worker in box._workers]
            yield box
    finally:
        del os.environ["OPENAI_API_KEY"]


@pytest.fixture
def canaries(tmp_path):
    """World-writable files in places a program must not touch, so only the sandbox (not
    file permissions) keeps them safe."""
    paths = [tmp_path / "canary.txt"]
    paths += [f"/{root}/{MARKER}-canary.txt" for root in ("tmp", "var/tmp", "dev/shm") if os.path.isdir(f"/{root}")]
    for path in paths:
        with open(path, "w") as handle:
            handle.write("intact")
        os.chmod(path, 0o666)
    yield [str(path) for path in paths]
    touched = [path for path in paths if not os.path.exists(path) or open(path).read() != "intact"]
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
    assert touched == []


def job_processes(sandbox):
    """Processes still running as a job's uid or carrying MARKER on their command line."""
    uids = {str(config["uid"]) for config in sandbox._configs}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                uid = next(line.split()[1] for line in status if line.startswith("Uid:"))
                if (uid in uids and os.getuid() == 0) or MARKER.encode() in cmdline.read():
                    found.append(pid)
        except (OSError, StopIteration):
            continue
    return found


def run(sandbox, program, tests="", allowed=NOT_PASSED):
    verdict = sandbox.check_all([(program, tests)])[0]
    assert not verdict.passed, verdict
    assert verdict.status in allowed, verdict
    assert verdict.reason and "\n" not in verdict.reason
    assert job_processes(sandbox) == [], "a process outlived its program"
    return verdict


def require_pid_namespace_and_unprivileged_uid(sandbox):
    """Check, in this very test, that programs run as a non-root uid inside a PID namespace of
    their own: catch one running and read its NSpid line in the host's /proc. Skip otherwise."""
    if os.getuid() != 0 or not all(sandbox.protections[name] for name in ("pid_namespace", "uid_drop", "process_limit")):
        pytest.skip("needs root to watch, and a PID namespace and an unprivileged uid to watch")
    uids = {str(config["uid"]) for config in sandbox._configs}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(sandbox.check_all, [("import time\ntime.sleep(0.6)\n", "")])
        nspids = []
        deadline = time.monotonic() + 5
        while not nspids and time.monotonic() < deadline:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
                except OSError:
                    continue
                if status["Uid"].split()[0] in uids:
                    nspids.append(status["NSpid"].split())
        assert running.result()[0].passed
    if not nspids or any(len(ids) < 2 for ids in nspids):
        pytest.skip(f"could not see the program inside a PID namespace: {nspids}")


# ---------------------------------------------------------------- resource exhaustion

def test_fork_bomb(sandbox):
    require_pid_namespace_and_unprivileged_uid(sandbox)
    program = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    run(sandbox, program, allowed={"timeout", "killed", "error", "memory"})


def test_infinite_loop(sandbox):
    verdict = run(sandbox, "while True:\n    pass\n", allowed={"timeout"})
    assert verdict.duration_s < 3


def test_memory_bomb(sandbox):
    run(sandbox, "hoard = []\nwhile True:\n    hoard.append(bytearray(10 ** 7))\n", allowed={"memory"})


@pytest.mark.parametrize("recursion", [
    "def down(n):\n    return down(n + 1)\ndown(0)",  # Python frames: heap, until the memory limit
    "nested = []\nfor _ in range(10 ** 6):\n    nested = [nested]\nrepr(nested)",  # C stack: overflows
], ids=["python", "c"])
def test_deep_recursion(sandbox, recursion):
    program = f"import sys\nsys.setrecursionlimit(10 ** 8)\n{recursion}\n"
    run(sandbox, program, allowed={"killed", "error", "memory", "timeout"})


def test_stdout_flood(sandbox):
    verdict = run(sandbox, "while True:\n    print('x' * 10000)\n", allowed={"output_limit"})
    assert len(verdict.stdout) < 10_000


def test_file_size_bomb(sandbox):
    verdict = run(sandbox, "open('big', 'wb').write(b'x' * (50 << 20))\n", allowed={"error"})
    assert "File too large" in verdict.reason


def test_filling_the_disk_with_small_files(sandbox):
    if not sandbox.protections["private_tmp"]:
        pytest.skip("without a private tmpfs there is no quota on the program's directory")
    program = "for i in range(1000):\n    open(f'f{i}', 'wb').write(b'x' * (1 << 19))\n"
    verdict = run(sandbox, program, allowed={"error"})
    assert "No space left" in verdict.reason


def test_thread_bomb(sandbox):
    program = ("import threading, time\nfor _ in range(100000):\n"
               "    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n")
    run(sandbox, program, allowed={"error", "memory", "timeout"})


# ---------------------------------------------------------------- escaping the directory

def attempt_each(action, paths):
    """A program that tries `action` (a statement about `path`) on every path, then lets the
    tests fail unless at least one attempt went through."""
    program = (f"done = []\nfor path in {paths!r}:\n    try:\n        {action}\n        done.append(path)\n"
               "    except OSError:\n        pass\nprint(done)\n")
    return program, "assert done, 'every attempt was refused'\n"


def test_writes_outside_the_temp_dir(sandbox, canaries):
    elsewhere = [f"{root}/{MARKER}" for root in ("/etc", "/root", "/var/tmp", "/dev/shm", os.getcwd())]
    run(sandbox, *attempt_each("open(path, 'w').write('pwned')", canaries + elsewhere), allowed={"failed"})
    assert not any(os.path.exists(path) for path in elsewhere)


def test_appending_and_truncating_outside(sandbox, canaries):
    run(sandbox, *attempt_each("open(path, 'a').write('pwned')", canaries), allowed={"failed"})
    run(sandbox, *attempt_each("__import__('os').truncate(path, 0)", canaries), allowed={"failed"})


def test_deleting_files_outside(sandbox, canaries):
    run(sandbox, *attempt_each("__import__('os').remove(path)", canaries), allowed={"failed"})
    run(sandbox, *attempt_each("__import__('os').rename(path, path + '.moved')", canaries), allowed={"failed"})


def test_symlink_escape(sandbox, canaries):
    links = [f"link{index}" for index in range(len(canaries))]
    program, tests = attempt_each("open(path, 'w').write('pwned')", links)
    setup = "".join(f"__import__('os').symlink({target!r}, {link!r})\n" for target, link in zip(canaries, links))
    run(sandbox, setup + program, tests, allowed={"failed"})


# ---------------------------------------------------------------- other processes

def test_killing_the_parent(sandbox):
    program = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(os.getpgid(0), signal.SIGKILL)\n"
    run(sandbox, program, allowed={"killed", "error"})


def test_signalling_the_harness_and_its_workers(sandbox):
    if not (sandbox.protections["pid_namespace"] or sandbox.protections["uid_drop"]):
        pytest.skip("nothing would stop the program from killing the harness")
    targets = [os.getpid(), *sandbox.started_workers]
    program = f"import os\nfor pid in {targets!r}:\n    os.kill(pid, 0)\n"  # signal 0: may I?
    run(sandbox, program, allowed={"error"})
    program = f"import os, signal\nfor pid in {sandbox.started_workers!r}:\n    os.kill(pid, signal.SIGKILL)\n"
    run(sandbox, program, allowed={"error"})


def test_kill_every_process(sandbox):
    require_pid_namespace_and_unprivileged_uid(sandbox)
    program = "import os, signal, time\nif os.fork() == 0:\n    time.sleep(30)\nos.kill(-1, signal.SIGKILL)\n"
    verdict = run(sandbox, program, "assert False, 'still alive'\n", allowed={"failed"})
    assert "still alive" in verdict.reason  # it could only kill its own child


def test_reading_the_harness_through_proc(sandbox):
    program = f"for name in ('environ', 'cmdline', 'maps'):\n    print(open('/proc/{os.getpid()}/' + name, 'rb').read())\n"
    verdict = run(sandbox, program, allowed={"error"})
    assert SECRET not in verdict.stdout


def test_reading_environment_secrets(sandbox):
    program = "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ', 'rb').read())\nassert 'OPENAI_API_KEY' in os.environ\n"
    verdict = run(sandbox, program, allowed={"error"})
    assert SECRET not in verdict.stdout + verdict.stderr


def test_connecting_to_a_local_socket(sandbox):
    if not (sandbox.protections["network_namespace"] or sandbox.protections["landlock_network"]):
        pytest.skip("no network isolation on this machine")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
        run(sandbox, program, allowed={"error"})
        with pytest.raises(socket.timeout):
            listener.accept()


def test_detached_children_do_not_outlive_the_program(sandbox, canaries):
    late = f"import os, time\ntime.sleep(0.3)\nopen({canaries[0]!r}, 'w').write('late')\n"
    program = "\n".join([
        "import os, subprocess, time",
        f"subprocess.Popen(['sh', '-c', 'sleep 30 # {MARKER}'], start_new_session=True)",
        "if os.fork() == 0:",  # a double fork, the grandchild in its own session
        "    os.setsid()",
        "    if os.fork() == 0:",
        f"        os.execv('/bin/sh', ['sh', '-c', 'sleep 30 # {MARKER}'])",
        "    os._exit(0)",
        "if os.fork() == 0:",
        "    os.setsid()",
        f"    exec({late!r})",
        "    os._exit(0)",
        "time.sleep(0.2)",
    ])
    run(sandbox, program, "assert False, 'the program only spawns'\n", allowed={"failed"})
    time.sleep(0.5)  # past the moment the late writer would have written
    assert job_processes(sandbox) == []


# ---------------------------------------------------------------- faking a pass

def test_sys_exit_before_tests(sandbox):
    run(sandbox, "import sys\nsys.exit(0)\n", "assert False\n", allowed={"exited_early"})


def test_os_exit_before_tests(sandbox):
    run(sandbox, "import os\nos._exit(0)\n", "assert False\n", allowed={"exited_early"})


def test_system_exit_raised_in_tests(sandbox):
    program = "def solve():\n    raise SystemExit(0)\n"
    run(sandbox, program, "assert solve() == 42\n", allowed={"exited_early"})


def test_forging_the_result_channel(sandbox):
    program = ("import os, json\nfor fd in range(1024):\n    try:\n"
               "        os.write(fd, b'passed\\n' + json.dumps(['passed', 'ok']).encode() + b'\\n')\n"
               "    except OSError:\n        pass\nos._exit(0)\n")
    run(sandbox, program, allowed={"exited_early"})


def test_closing_the_standard_and_inherited_fds(sandbox):
    program = "import os\nfor fd in range(1024):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
    run(sandbox, program, "assert 1 + 1 == 2\n", allowed={"exited_early"})


@pytest.mark.parametrize("patch, tests", [
    ("import builtins\nbuiltins.abs = lambda x: 0", "assert abs(answer() - 3) < 1e-9"),
    ("import builtins\nbuiltins.isinstance = lambda *args: True", "assert isinstance(answer(), int) and answer() == 3"),
    ("import builtins\nbuiltins.len = lambda x: 3", "assert len(str(answer())) == 3"),
    ("import builtins\nreal = builtins.__import__\n"
     "builtins.__import__ = lambda name, *a, **k: type('M', (), {'isclose': staticmethod(lambda *x, **y: True)})"
     " if name == 'math' else real(name, *a, **k)",
     "import math\nassert math.isclose(answer(), 3)"),
    ("import math\nmath.isclose = lambda *args, **kwargs: True", "assert math.isclose(answer(), 3)"),
    ("import sys, types\nsys.modules['math'] = types.SimpleNamespace(isclose=lambda *a, **k: True)",
     "import math\nassert math.isclose(answer(), 3)"),
    ("import sys, importlib.util\nclass Fake:\n    def find_spec(self, name, path, target=None):\n"
     "        return importlib.util.spec_from_loader(name, self) if name == 'textwrap' else None\n"
     "    def create_module(self, spec):\n        return None\n"
     "    def exec_module(self, module):\n        module.dedent = lambda text: '3'\n"
     "sys.meta_path.insert(0, Fake())",
     "import textwrap\nassert textwrap.dedent(str(answer())) == '3'"),
    ("import sys\njumped = []\ndef skip(frame, event, arg):\n"
     "    if frame.f_code.co_filename == '<tests>' and event == 'line' and not jumped:\n"
     "        jumped.append(frame.f_lineno)\n        frame.f_lineno += 1\n    return skip\nsys.settrace(skip)",
     "assert answer() == 3\npass"),
], ids=["abs", "isinstance", "len", "__import__", "math.isclose", "sys.modules", "meta_path", "settrace"])
def test_monkeypatching_does_not_reach_the_tests(sandbox, patch, tests):
    program = f"def answer():\n    return 2\n{patch}\n"  # the wrong answer, plus a cheat
    run(sandbox, program, tests, allowed={"failed", "error"})


# ---------------------------------------------------------------- timing tricks

def test_ignoring_termination_signals(sandbox):
    program = ("import signal\nfor sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):\n"
               "    signal.signal(sig, signal.SIG_IGN)\nsignal.alarm(0)\nwhile True:\n    pass\n")
    verdict = run(sandbox, program, allowed={"timeout"})
    assert verdict.duration_s < 3


def test_sleeping_past_the_timeout(sandbox):
    verdict = run(sandbox, "import time\ntime.sleep(100)\n", allowed={"timeout"})
    assert verdict.duration_s < 3


def test_waiting_for_stdin(sandbox):
    run(sandbox, "input()\n", allowed={"error"})


# ---------------------------------------------------------------- and after all that

def test_the_harness_survived(sandbox):
    assert [worker._process.pid for worker in sandbox._workers] == sandbox.started_workers
    verdicts = sandbox.check_all([("def f(x):\n    return x * 2\n", "assert f(21) == 42\n")] * 4)
    assert all(verdict.passed for verdict in verdicts)
    assert job_processes(sandbox) == []
