"""A sandbox worker: serves the harness's jobs, one at a time, over stdin/stdout.

phi_eval.execution.sandbox starts one per worker as `python -I worker.py CONFIG`, with a
minimal environment. Standard library only; it preloads the modules benchmark code uses, so
interpreter start-up is paid once per worker. Three processes take part in a job:

  worker (this process, trusted)  private network and mount namespaces; a tmpfs over the
      jobs' directories; watches the job's time and output, decides nothing about the tests
  judge (judge.py, trusted)       forked once per worker (again if a job leaves it stuck),
      outside the sandbox: runs the trusted tests; every use of the program's values is a
      request to the runner, answered in plain data; its [status, reason] is the verdict
  runner (runner.py, untrusted)   forked per job, one job ahead, by the zygote (zygote.py),
      PID 1 of the sandbox's PID and IPC namespaces; confined, then runs the program and
      answers requests

Model-written code runs only in the runner, so nothing it does can reach the code or the data
that decides "passed". Where the kernel refuses a namespace (or Landlock, seccomp, a uid change,
a cgroup), the worker goes without it and says so in its first message (Sandbox.protections).
"""
import gc
import json
import os
import select
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Loaded once here so that programs and tests find them imported: the modules HumanEval and
# MBPP use most. Rarer ones are left out: every module loaded makes every fork a little dearer.
import bisect, collections, copy, functools, heapq, itertools, math, re, string, typing  # noqa: E401,E402,F401

import cgroup  # noqa: E402
import confine  # noqa: E402
import judge  # noqa: E402
import wire  # noqa: E402
import zygote  # noqa: E402

sys.path.remove(HERE)

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
CLONE_NEWNET, CLONE_NEWIPC = 0x40000000, 0x08000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
# Programs see this environment (plus HOME and TMPDIR, their own directory): built from
# nothing, so no secret of the harness can leak in.
JOB_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# In the sandbox's own IPC namespace: no SysV object may be made at all (seccomp refuses the
# calls too; this holds where seccomp is missing).
IPC_LIMITS = {"shmmni": "0", "shmall": "0", "shmmax": "0", "msgmni": "0", "sem": "0 0 0 0"}
EXCERPT_BYTES = 2048
VERDICT_BYTES = 1 << 16
JUDGE_GRACE_S = 0.5  # how long a judge whose runner was killed may take to answer
mount, prctl, unshare = (getattr(confine.libc, name) for name in ("mount", "prctl", "unshare"))


# ---------------------------------------------------------------- set-up

def enter_worker_namespaces(temp_root, tmpfs_mb):
    """Private network and mount namespaces where the kernel allows, with size-capped tmpfs
    over temp_root (the jobs' directories) and /dev/shm. As root a plain unshare; otherwise a
    user namespace (mapping only our own uid) grants what is needed. Returns what is in force."""
    uid, gid = os.getuid(), os.getgid()
    entered = dict.fromkeys(["user_namespace", "network_namespace", "private_tmp"], False)
    if uid != 0:
        try:
            confine.check(unshare(CLONE_NEWUSER))
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
            entered["user_namespace"] = True
        except OSError:
            return entered
    entered["network_namespace"] = unshare(CLONE_NEWNET) == 0
    # Mode 0711: each job may enter its own directory but not list the others'.
    entered["private_tmp"] = (
        unshare(CLONE_NEWNS) == 0
        and mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
        and mount(b"tmpfs", os.fsencode(temp_root), b"tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={tmpfs_mb}m,mode=0711".encode()) == 0)
    if entered["private_tmp"] and os.path.isdir("/dev/shm"):
        mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755")
    return entered


def start_zygote(config, confinement, job_tmpfs, import_handles):
    """Fork the zygote into new PID and IPC namespaces; returns the child we forked and our end
    of the zygote's control socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child:
        theirs.close()
        return child, ours
    try:
        ours.close()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        namespaces = {"pid_namespace": unshare(CLONE_NEWPID) == 0,
                      "ipc_namespace": "ipc_namespace" not in config["skip"] and unshare(CLONE_NEWIPC) == 0}
        if namespaces["pid_namespace"]:
            # unshare(CLONE_NEWPID) moves only future children: the child carries on as PID 1.
            child = os.fork()
            if child:
                os.waitpid(child, 0)
                os._exit(0)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        else:
            prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come to us, not to the machine's init
        namespaces["ipc_limits_zero"] = namespaces["ipc_namespace"] and zero_ipc_limits()
        confine.set_process_name(b"phi-zygote")
        # The first compile() in a process builds the AST node types (~1.5 ms): once, here,
        # rather than in every job.
        compile("", "<warm-up>", "exec")
        gc.freeze()  # a collection in a job then never walks (and so copies) our objects
        zygote.Zygote(config, theirs, confinement, namespaces, job_tmpfs, import_handles).serve()
    finally:
        os._exit(0)


def zero_ipc_limits():
    try:
        for name, value in IPC_LIMITS.items():
            with open(f"/proc/sys/kernel/{name}", "w") as handle:
                handle.write(value)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- one job

class Job:
    """One program and its tests: the runner (through the zygote), the judge, the watch."""

    def __init__(self, worker, program, tests):
        self.worker, self.program, self.tests = worker, program, tests
        self.readers = {}  # read end -> name
        self.kept = {"stdout": b"", "stderr": b""}
        self.sizes = dict.fromkeys(self.kept, 0)

    def run(self):
        worker, limits = self.worker, self.worker.limits
        start = time.monotonic()
        oom_before = worker.oom_count
        # The runner waiting on the other ends was started at the end of the previous job.
        requests, replies, (out, out_write), (err, err_write) = worker.next_pipes
        for name, read_end in (("stdout", out), ("stderr", err)):
            os.set_blocking(read_end, False)
            self.readers[read_end] = name
        outcome = judged = None
        try:
            try:
                worker.judge.submit(self.program, self.tests, [requests, replies, out_write, err_write])
            finally:
                for fd in (requests, replies, out_write, err_write):
                    os.close(fd)
            outcome = self.watch(start + limits["timeout_s"])
            judged = worker.judge.verdict(0) if outcome is None else None
        finally:
            gone = judged is not None and judged[0] == "gone"
            runner = worker.ask_zygote_with_pipes({"end": True, "grace": gone})
            if judged is None:  # stopped early: with its runner gone, the judge answers at once
                worker.judge.verdict(JUDGE_GRACE_S)
            self.drain_and_close()
        worker.oom_count = worker.oom_kills()  # the next job's starting count (one read per job)
        out_of_memory = worker.oom_count > oom_before
        if outcome is None:
            outcome = judged or ("error", "sandbox failure: the judge did not report")
            if gone and (runner["by_itself"] or out_of_memory):
                outcome = worker.classify_runner(runner["status"], out_of_memory)
            elif gone:  # still running, but no longer answering as the protocol says
                outcome = "failed", judged[1]
        elif out_of_memory:
            outcome = "memory", "the process tree ran out of memory (memory limit)"
        return {"status": outcome[0], "reason": wire.printable(outcome[1]), "duration_s": time.monotonic() - start,
                "stdout": self.text("stdout"), "stderr": self.text("stderr")}

    def watch(self, deadline):
        """Collect output until the judge answers, the time is up or the output cap is hit.
        Returns None, or (status, reason) when the job must be stopped."""
        limits = self.worker.limits
        poller = select.poll()
        for fd in self.readers:
            poller.register(fd, select.POLLIN)
        answer = self.worker.judge.control.fileno()
        poller.register(answer, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", f"wall-clock timeout after {limits['timeout_s']:g} s"
            events = poller.poll(remaining * 1000)
            for fd, _ in events:
                if fd != answer and not self.read(fd):
                    poller.unregister(fd)
            if self.sizes["stdout"] + self.sizes["stderr"] > limits["output_bytes"]:
                return "output_limit", f"wrote more than {limits['output_bytes']} bytes of output"
            if any(fd == answer for fd, _ in events):
                return None

    def read(self, fd):
        """Read what is there, keeping a bounded prefix. False once nothing more comes."""
        name = self.readers[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        self.sizes[name] += len(data)
        room = EXCERPT_BYTES - len(self.kept[name])
        if room > 0:
            self.kept[name] += data[:room]
        return bool(data)

    def drain_and_close(self):
        for fd in self.readers:
            while self.read(fd):
                pass
            os.close(fd)

    def text(self, name):
        return wire.printable(self.kept[name].decode(errors="replace"))


class Judge:
    """The worker's judge process (judge.serve_jobs), forked once and again only when a job
    left it stuck (tests still computing when their time was up)."""

    def __init__(self, import_handles):
        self.import_handles = import_handles
        self.start()

    def start(self):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for fd in (0, 1, 2):  # not the harness's pipes
                    os.dup2(os.open(os.devnull, os.O_RDWR), fd)
                zygote.close_fds_except([theirs.fileno(), *self.import_handles])
                confine.set_process_name(b"phi-judge")
                judge.serve_jobs(theirs)
            finally:
                os._exit(0)
        theirs.close()

    def restart(self):
        self.control.close()
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.start()

    def submit(self, program, tests, fds):
        job_read, job_write = os.pipe()
        try:
            socket.send_fds(self.control, [b"job"], [job_read, *fds])
        except OSError:  # it died: a new one takes the job
            self.restart()
            socket.send_fds(self.control, [b"job"], [job_read, *fds])
        os.close(job_read)
        wire.send(job_write, {"program": program, "tests": tests})  # it reads this at once
        os.close(job_write)

    def verdict(self, wait_s):
        """Its [status, reason] for the job; None (and a new judge) when none comes in time."""
        if select.select([self.control], [], [], wait_s)[0]:
            try:
                status, reason = wire.loads(self.control.recv(VERDICT_BYTES))
                if (status in wire.STATUSES or status == "gone") and isinstance(reason, str):
                    return status, reason
            except (OSError, ValueError):
                pass
        self.restart()
        return None


class Worker:
    def __init__(self, config):
        self.config = config
        self.limits = config["limits"]
        self.cgroup = config.get("cgroup")
        self.import_handles = []
        self.control = None
        self.next_pipes = None
        self.oom_count = self.oom_kills()

    def ask_zygote_with_pipes(self, message):
        """ask_zygote, handing it the next job's pipes to start that job's runner with; ours
        go to next_pipes (the output's write ends too: the judge's are those)."""
        requests, replies, out, err = (os.pipe() for _ in range(4))
        self.next_pipes = requests[1], replies[0], out, err
        try:
            return self.ask_zygote(message, [requests[0], replies[1], out[1], err[1]])
        finally:
            os.close(requests[0])
            os.close(replies[1])

    def ask_zygote(self, message, fds=()):
        try:
            socket.send_fds(self.control, [wire.dumps(message)], list(fds))
            reply = self.control.recv(zygote.MESSAGE_BYTES)
        except OSError:
            reply = b""
        if not reply:  # the zygote died: exit, and the harness starts a new worker
            os._exit(1)
        return wire.loads(reply)

    def oom_kills(self):
        return cgroup.oom_kills(*self.cgroup) if self.cgroup else 0

    def classify_runner(self, status, out_of_memory):
        """How a runner that stopped answering ended."""
        if out_of_memory:
            return "memory", "the process tree ran out of memory (memory limit)"
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if number == signal.SIGXCPU:
                return "timeout", f"CPU time limit ({int(self.limits['timeout_s']) + 2} s) exceeded"
            return "killed", f"killed by {signal.Signals(number).name}"
        code = os.waitstatus_to_exitcode(status)
        if code == 70:
            return "error", "sandbox failure: the runner could not be confined"
        return "exited_early", f"exited with code {code} before the tests finished"


def main():
    config = json.loads(sys.argv[1])
    sys.argv = [""]  # what programs see, as under `python -`
    sys.dont_write_bytecode = True  # never write into the Python installation
    os.environ.clear()
    os.environ.update(JOB_ENV)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness handles Ctrl-C and closes our input
    confine.set_process_name(b"phi-worker")
    limits = config["limits"]
    namespaces = enter_worker_namespaces(config["temp_root"], 2 * zygote.TMPFS_FILES * limits["file_size_mb"] + 8)
    import_handles = confine.make_imports_reachable() if os.getuid() == 0 else []
    drop_to = (config["uid"], config["uid"]) if os.getuid() == 0 else None
    max_tasks = limits["max_processes"] + (0 if drop_to else confine.count_tasks(os.getuid()))
    confinement = confine.Confinement(limits, drop_to, max_tasks)
    worker = Worker(config)
    worker.import_handles = import_handles
    job_tmpfs = namespaces["private_tmp"] and "job_tmpfs" not in config["skip"]
    zygote_pid, worker.control = start_zygote(config, confinement, job_tmpfs, import_handles)
    worker.judge = Judge(import_handles)
    found = worker.ask_zygote({"probe": True})
    worker.ask_zygote_with_pipes({"next": True})
    landlock_in_force = confinement.abi if found["landlock"] else 0
    wire.send(1, {
        **namespaces, **{name: value for name, value in found.items() if name != "memory_cgroup"},
        # Root ignores RLIMIT_NPROC: it binds only once the uid is dropped.
        "process_limit": found["rlimits"] and (found["uid_drop"] or os.getuid() != 0),
        "landlock_network": landlock_in_force >= 4, "landlock_scope": landlock_in_force >= 6,
        "memory_cgroup_v1": found["memory_cgroup"] and worker.cgroup[0] == "v1",
        "memory_cgroup_v2": found["memory_cgroup"] and worker.cgroup[0] == "v2",
        "job_tmpfs": job_tmpfs, "judge_process": True,
        "wall_timeout": True, "temp_dir": True, "minimal_env": True, "output_cap": True,
    })
    gc.freeze()
    while True:
        job = wire.receive(0)  # None once the harness closed the pipe or died
        if job is None:
            for control, pid in ((worker.control, zygote_pid), (worker.judge.control, worker.judge.pid)):
                control.close()  # their cue to exit
                os.waitpid(pid, 0)
            return
        try:
            verdict = Job(worker, job["program"], job["tests"]).run()
        except Exception as error:  # a sandbox failure: report it, keep serving
            verdict = {"status": "error", "reason": wire.printable(f"sandbox failure: {error!r}"),
                       "duration_s": 0.0, "stdout": "", "stderr": ""}
        wire.send(1, verdict)


if __name__ == "__main__":
    main()
