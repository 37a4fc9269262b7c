"""Programs that try to leave something behind, reach the host, or end the run: SysV and POSIX
IPC, kernel keyrings, Unix sockets on the host, memory past the cap in forked children, trees and
files that would outlast clean-up, and text that no UTF-8 writer accepts. For each: what it tried
was refused or undone, the next job sees a clean slate, and nothing is left on the host.

Runs on one worker, so that "the next job" is the same worker's next job.
"""
import json
import os
import platform
import socket
import uuid

import pytest

from phi_eval.execution import Limits, Sandbox
from redteam_support import leftovers, sandbox_uids, snapshot

MARKER = f"phi-eval-isolation-{uuid.uuid4().hex[:12]}"
LIMITS = Limits(timeout_s=3.0, memory_mb=256, max_processes=32, file_size_mb=1, output_bytes=100_000)
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
REPORT = "print(result, ctypes.get_errno())\n"
X86_64 = platform.machine() == "x86_64"  # raw system call numbers below are x86_64's


@pytest.fixture(scope="module")
def box():
    before = snapshot()
    with Sandbox(workers=1, limits=LIMITS) as sandbox:
        sandbox.before, sandbox.uids = before, sandbox_uids(sandbox)
        yield sandbox


def run(box, program, tests=""):
    verdict = box.check_all([(program, tests)])[0]
    assert verdict.reason and "\n" not in verdict.reason
    assert leftovers(box.before, box.uids, MARKER) == {}, "something outlived the job"
    return verdict


def refused(box, program):
    """Run a program that prints the call's result and errno; the call must have failed."""
    verdict = run(box, LIBC + program + REPORT)
    assert verdict.passed, verdict
    result, errno = verdict.stdout.split()
    assert int(result) == -1 and int(errno) > 0, verdict.stdout
    return verdict


# ---------------------------------------------------------------- SysV and POSIX IPC

@pytest.mark.parametrize("program", [
    "result = libc.shmget(0x5048, 1 << 20, 0o1666)\n",
    "result = libc.shmget(0, 1 << 20, 0o1666)\n",  # IPC_PRIVATE
    "result = libc.msgget(0x5049, 0o1666)\n",
    "result = libc.semget(0x504A, 4, 0o1666)\n",
    "rt = ctypes.CDLL('librt.so.1', use_errno=True)\nresult = rt.mq_open(b'/" + MARKER + "', os.O_CREAT | os.O_RDWR, 0o666, None)\n",
], ids=["shm", "shm-private", "msg", "sem", "posix-mq"])
def test_ipc_objects_cannot_be_made(box, program):
    refused(box, program)


def test_posix_shared_memory_is_refused(box):
    program = ("from multiprocessing import shared_memory\n"
               f"shared_memory.SharedMemory(name={MARKER!r}, create=True, size=1 << 20)\n")
    assert run(box, program).status == "error"
    assert not os.path.exists(f"/dev/shm/{MARKER}")


# ---------------------------------------------------------------- kernel keyrings

@pytest.mark.skipif(not X86_64, reason="raw x86_64 system call numbers")
@pytest.mark.parametrize("program", [
    "result = libc.syscall(248, b'user', b'" + MARKER + "', b'secret', 6, -3)\n",  # add_key to the session keyring
    "result = libc.syscall(248, b'user', b'" + MARKER + "', b'secret', 6, -4)\n",  # ... to the user keyring
    "result = libc.syscall(250, 1, b'" + MARKER + "')\n",  # keyctl(JOIN_SESSION_KEYRING)
    "result = libc.syscall(249, b'user', b'" + MARKER + "', None, -3)\n",  # request_key
], ids=["add-key-session", "add-key-user", "join-session-keyring", "request-key"])
def test_keyrings_cannot_be_used(box, program):
    refused(box, program)


def test_no_keys_are_held_by_the_jobs(box):
    assert not {uid for uid in snapshot()["keys"] if uid in box.uids}


# ---------------------------------------------------------------- sockets and other escapes

def test_host_unix_socket_by_path_is_unreachable(box, tmp_path):
    os.chmod(tmp_path, 0o777)
    path = str(tmp_path / "host.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen(1)
        server.settimeout(0.3)
        program = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\ns.sendall(b'escaped')\n"
        verdict = run(box, program)
        assert verdict.status == "error" and "PermissionError" in verdict.reason, verdict
        with pytest.raises(socket.timeout):
            server.accept()


def test_abstract_unix_socket_is_refused(box):
    program = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0{MARKER}')\n"
    assert run(box, program).status == "error"


def test_host_tcp_listener_is_unreachable(box):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n"
        assert run(box, program).status == "error"


@pytest.mark.skipif(not X86_64, reason="raw x86_64 system call numbers")
@pytest.mark.parametrize("program", [
    "import ctypes\nparams = ctypes.create_string_buffer(120)\nresult = libc.syscall(425, 8, params)\n",  # io_uring_setup
    "result = libc.unshare(0x10000000)\n",  # a user namespace would hand back capabilities
    "result = libc.mount(b'none', b'.', b'tmpfs', 0, None)\n",
], ids=["io_uring", "user-namespace", "mount"])
def test_kernel_escape_hatches_are_refused(box, program):
    refused(box, program)


# ---------------------------------------------------------------- memory and processes

def test_forked_children_share_one_memory_cap(box):
    program = ("import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n"
               "        block = b'x' * (70 << 20)\n        time.sleep(10)\n        os._exit(0)\n"
               "time.sleep(10)\n")
    verdict = run(box, program)
    assert not verdict.passed
    group = box._configs[0]["cgroup"]
    if group and group[0] == "v1":
        with open(os.path.join(group[1], "memory.max_usage_in_bytes")) as handle:
            assert int(handle.read()) <= LIMITS.memory_mb << 20
        assert verdict.status == "memory", verdict


def test_detached_daemons_do_not_outlive_the_job(box):
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        os.execvp('sh', ['sh', '-c', 'sleep 30 # {MARKER}'])\n    os._exit(0)\ntime.sleep(0.2)\n")
    assert run(box, program, "assert False\n").status == "failed"  # run() checks the processes


# ---------------------------------------------------------------- the job's directory

FREE_AND_LISTING = "import os\nst = os.statvfs('.')\nprint(st.f_bfree, st.f_ffree, os.listdir('.'))\n"


def clean_slate(box):
    return run(box, FREE_AND_LISTING).stdout


def test_deep_directory_tree_is_gone_for_the_next_job(box):
    fresh = clean_slate(box)
    program = ("import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n"
               "open('f', 'w').write('x' * 1000)\nos.chmod('.', 0)\n")
    assert run(box, program).passed
    assert clean_slate(box) == fresh


def test_filling_the_tmpfs_does_not_reach_the_next_job(box):
    fresh = clean_slate(box)
    program = ("import os\ni = 0\ntry:\n    while True:\n        with open(f'f{i}', 'wb') as f:\n"
               "            f.write(b'x' * (1 << 20))\n        i += 1\nexcept OSError as e:\n    print('full', e.errno)\n")
    verdict = run(box, program)
    assert verdict.stdout.startswith("full")
    assert clean_slate(box) == fresh


def test_running_out_of_inodes_does_not_reach_the_next_job(box):
    fresh = clean_slate(box)
    program = ("import os\ni = 0\ntry:\n    while True:\n        os.close(os.open(f'{i}', os.O_CREAT | os.O_WRONLY))\n"
               "        i += 1\nexcept OSError as e:\n    print('full', e.errno)\n")
    assert run(box, program).stdout.startswith("full")
    assert clean_slate(box) == fresh


def test_the_previous_job_directory_is_unreachable(box):
    first = run(box, "import os\nopen('secret', 'w').write('x')\nprint(os.getcwd())\n")
    path = os.path.join(first.stdout.strip(), "secret")
    assert run(box, f"open({path!r})\n").status == "error"


# ---------------------------------------------------------------- text no writer accepts

@pytest.mark.parametrize("program", [
    "raise ValueError(chr(0xD800))\n",
    "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\nprint(chr(0xDFFF), file=sys.stderr)\n",
    "def f(x):\n    raise KeyError(chr(0xDC80) * 500)\n",
], ids=["exception", "output", "in-call"])
def test_lone_surrogates_are_escaped(box, program):
    verdict = run(box, program, "f(1)\n" if "def f" in program else "")
    for text in (verdict.reason, verdict.stdout, verdict.stderr):
        text.encode("utf-8")  # would raise on a lone surrogate
    assert json.loads(json.dumps(verdict.reason, ensure_ascii=False)) == verdict.reason


def test_a_surrogate_never_ends_a_run_even_from_the_cache(tmp_path, phi_home, capsys):
    from phi_eval.cli import main
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    raise ValueError(chr(0xD800))\n"}) + "\n")
    argv = ["run", "--models", f"replay:{samples}", "--tasks", "humaneval", "--limit", "1", "--out", str(tmp_path / "out"),
            "--workers", "1"]
    for _ in range(2):  # the second run takes the verdict from the cache
        assert main(argv) == 0, capsys.readouterr().err
        record = json.loads(next((tmp_path / "out").glob("*/samples_humaneval.jsonl")).read_text())
        assert record["status"] == "error" and "\\ud800" in record["reason"]


def test_nothing_left_behind_at_the_end(box):
    assert leftovers(box.before, box.uids, MARKER) == {}
    assert box.check_all([("def f():\n    return 1\n", "assert f() == 1\n")])[0].passed
