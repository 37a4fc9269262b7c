"""The sandbox's worker process: runs model-written programs, one confined process tree each.

phi_eval.execution.sandbox starts one of these per worker as `python -I zygote.py CONFIG`
with a minimal environment. It imports only the standard library, preloads the modules that
benchmark programs use, and then serves jobs over stdin/stdout (length-prefixed JSON), so
interpreter start-up is paid once per worker rather than once per program.

The zygote is PID 1 of the worker's own PID namespace, and lives in its own network and mount
namespaces too (a private tmpfs holds the jobs' directories). It runs one job at a time, in a
forked "runner": rlimits, an unprivileged uid, Landlock; then the program and the tests. So
at the end of a job (or on timeout) every other process in the namespace is the job's, and
one kill(-1, SIGKILL) from PID 1 ends them all, detached children and fork bombs included.

Where the kernel refuses a namespace (or Landlock, or a uid change), the zygote goes without
it and says so in its first message; without a PID namespace it is a child subreaper and
kills, round after round, the orphans it inherits.

The runner reports "passed" only after the tests ran to their end, on a pipe the zygote reads,
tagged with a random per-job nonce; an exit code proves nothing. Before the tests run, the
runner restores the interpreter state the program may have monkeypatched: builtins, the
modules loaded beforehand, sys.modules, import hooks, recursion limit and trace hooks.

Limits of the design: program and tests share one interpreter, so a program written to attack
this file on purpose (digging the nonce out of memory, poisoning the snapshot it restores from,
leaving a thread that patches things again, returning an object equal to everything) could
fake a pass. It still cannot escape the confinement: that is enforced by the kernel, not by
Python. Not as root, programs keep the user's supplementary groups, and Landlock does not
cover connecting to unix sockets by path: a socket those groups may use stays reachable.
"""
import builtins
import ctypes
import gc
import json
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import time

# Loaded once here so that programs find them imported: the modules HumanEval and MBPP use
# most. Rarer ones are left out, since every module loaded makes every fork a little dearer
# (and `random` re-seeds itself in each fork).
import bisect, collections, copy, functools, heapq, itertools, math, re, string, typing  # noqa: E401,F401

libc = ctypes.CDLL(None, use_errno=True)
# Looked up once, here: a lookup creates objects, and whatever a forked job writes to costs a
# copied memory page.
capset, mount, prctl, syscall, unshare = (
    getattr(libc, name) for name in ("capset", "mount", "prctl", "syscall", "unshare"))

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_RULE_PATH_BENEATH = 1

# Landlock filesystem rights: the first 13 came with ABI 1, REFER with 2, TRUNCATE with 3,
# IOCTL_DEV with 5. Network rights came with ABI 4, scopes with ABI 6.
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
FS_TRUNCATE = 1 << 14
FS_RIGHT_COUNT_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15}
FS_RIGHT_COUNT_LATEST = 16
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# Where a program may read (and run) files: the system and this Python installation.
READABLE_ROOTS = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt"]
DEVICES = {"/dev/null": FS_READ_FILE | FS_WRITE_FILE, "/dev/zero": FS_READ_FILE,
           "/dev/urandom": FS_READ_FILE, "/dev/random": FS_READ_FILE}

# Programs see this environment (plus HOME and TMPDIR, their own directory): built from
# nothing, so no secret of the harness can leak in.
JOB_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The same as phi_eval.execution.sandbox.STATUSES, which this standalone script cannot import.
STATUSES = ("passed", "failed", "error", "timeout", "memory", "output_limit", "exited_early", "killed")
OPEN_FILES = 256
TMPFS_FILES = 4  # the private tmpfs holds this many files of the largest size allowed
EXCERPT_BYTES = 2048
REPORT_BYTES = 1 << 16
REASON_CHARS = 300


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


# capset()'s arguments for "none at all", built here: making the array type in every job
# would cost more than the call.
NO_CAPABILITIES = (CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (CapData * 2)())


def check(result):
    """Turn a libc-style -1 return into OSError."""
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def landlock_abi():
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    version = syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(version, 0)


# ---------------------------------------------------------------- framing with the harness

def read_exact(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def receive(fd):
    """One length-prefixed JSON message, or None at end of input."""
    header = read_exact(fd, 4)
    body = header and read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def send(fd, message):
    data = json.dumps(message).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------- worker set-up

def enter_worker_namespaces(temp_root, tmpfs_mb):
    """Give the whole worker private network, PID and mount namespaces where the kernel
    allows, and in the last a size-capped tmpfs over temp_root for the jobs' directories.

    As root that is a plain unshare. Otherwise a user namespace (mapping only our own uid)
    grants the capabilities to create the others. Returns which of these are in force.
    """
    uid, gid = os.getuid(), os.getgid()
    entered = dict.fromkeys(["user_namespace", "network_namespace", "pid_namespace", "private_tmp"], False)
    if uid != 0:
        try:
            check(unshare(CLONE_NEWUSER))
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
            entered["user_namespace"] = True
        except OSError:
            return entered
    for key, flag in (("network_namespace", CLONE_NEWNET), ("pid_namespace", CLONE_NEWPID)):
        entered[key] = unshare(flag) == 0
    # Mode 0711: each job may enter its own directory but not list the others'.
    entered["private_tmp"] = (
        unshare(CLONE_NEWNS) == 0
        and mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
        and mount(b"tmpfs", os.fsencode(temp_root), b"tmpfs", MS_NOSUID | MS_NODEV,
                       f"size={tmpfs_mb}m,mode=0711".encode()) == 0)
    return entered


def become_pid_one():
    """unshare(CLONE_NEWPID) moves only future children: fork, and let the child carry on as
    PID 1 of the namespace."""
    child = os.fork()
    if child:
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def readable_paths():
    paths = READABLE_ROOTS + [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                              os.path.dirname(os.path.realpath(sys.executable))]
    paths += [entry for entry in sys.path if entry]
    return sorted({os.path.realpath(path) for path in paths if os.path.exists(path)})


def count_tasks(uid):
    """How many processes and threads this uid runs now: RLIMIT_NPROC counts them all."""
    total = 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                total += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return total


def traversable_by_others(path):
    """Whether a uid that owns nothing here may walk down to `path` (ACLs aside)."""
    parent = os.path.dirname(path)
    while parent != path:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        path, parent = parent, os.path.dirname(parent)
    return True


def make_imports_reachable():
    """Jobs run as an unprivileged uid that may not reach the Python installation (pyenv or
    conda under /root, mode 700). For such import paths, open a handle now and import
    through /proc/self/fd/N instead: jobs inherit the handle, which skips the ancestors.
    Returns the handles, which jobs must keep open."""
    renamed = {}
    for index, entry in enumerate(sys.path):
        real = os.path.realpath(entry) if entry else ""
        if os.path.isdir(real) and not traversable_by_others(real):
            handle = os.open(real, os.O_PATH | os.O_DIRECTORY)
            renamed[real] = sys.path[index] = f"/proc/self/fd/{handle}"
    # Submodules of packages already imported are found through the package's __path__.
    for module in list(sys.modules.values()):
        search_path = getattr(module, "__path__", None)
        if isinstance(search_path, list):
            for index, entry in enumerate(search_path):
                for real, handle_path in renamed.items():
                    if entry == real or entry.startswith(real + os.sep):
                        search_path[index] = handle_path + entry[len(real):]
    return [int(path.rsplit("/", 1)[1]) for path in renamed.values()]


def close_fds_except(keep):
    """Close every descriptor from 3 up, except those in `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


class Worker:
    """What the zygote decided at start-up, and the per-job machinery."""

    def __init__(self, config, namespaces, import_handles):
        self.limits = limits = config["limits"]
        self.import_handles = import_handles
        self.temp_root = config["temp_root"]
        self.namespaces = namespaces
        self.drop_to = (config["uid"], config["uid"]) if os.getuid() == 0 else None
        self.cpu_seconds = int(limits["timeout_s"]) + 2
        # Not as root, RLIMIT_NPROC counts this uid's other processes too: leave room for them.
        self.max_tasks = limits["max_processes"] + (0 if self.drop_to else count_tasks(os.getuid()))
        self.abi = landlock_abi()
        self.landlock_fds = {}
        if self.abi:
            for path in readable_paths():
                self.landlock_fds[os.open(path, os.O_PATH | os.O_CLOEXEC)] = FS_READ
            for path, rights in DEVICES.items():
                if os.path.exists(path):
                    self.landlock_fds[os.open(path, os.O_PATH | os.O_CLOEXEC)] = rights
        self.confinement = {}  # step name -> whether it works here (set by probe)

    # ------------------------------------------------------------ confinement, in the runner

    def set_rlimits(self):
        limits = self.limits
        for which, soft, hard in (
                (resource.RLIMIT_AS, limits["memory_mb"] << 20, limits["memory_mb"] << 20),
                # SIGXCPU at the soft limit (reported as a timeout), SIGKILL a second later.
                (resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1),
                (resource.RLIMIT_FSIZE, limits["file_size_mb"] << 20, limits["file_size_mb"] << 20),
                (resource.RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES),
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_NPROC, self.max_tasks, self.max_tasks)):
            resource.setrlimit(which, (soft, hard))
        return True

    def drop_uid(self):
        """As root, become the worker's own uid: RLIMIT_NPROC then applies, and the program
        can neither signal other processes nor write files that root owns."""
        if not self.drop_to:
            return False
        uid, gid = self.drop_to
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        return True

    @staticmethod
    def drop_capabilities():
        """Clear what a user namespace granted (after a uid drop there is nothing left)."""
        check(capset(ctypes.byref(NO_CAPABILITIES[0]), ctypes.byref(NO_CAPABILITIES[1])))
        return True

    @staticmethod
    def no_new_privs():
        check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return True

    def landlock(self, workdir):
        """Writes only beneath the job's directory; reads only of system and Python files;
        no TCP; no signals or abstract unix sockets reaching outside the job."""
        if not self.abi:
            return False
        handled_fs = (1 << FS_RIGHT_COUNT_BY_ABI.get(self.abi, FS_RIGHT_COUNT_LATEST)) - 1
        attr = RulesetAttr(handled_fs, NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0,
                           SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0)
        ruleset = check(syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                                     ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)))
        rules = dict(self.landlock_fds)
        rules[os.open(workdir, os.O_PATH | os.O_CLOEXEC)] = handled_fs
        for fd, rights in rules.items():
            if rights & FS_WRITE_FILE:
                rights |= FS_TRUNCATE
            rule = PathBeneathAttr(rights & handled_fs, fd)
            check(syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                               ctypes.byref(rule), ctypes.c_uint32(0)))
        check(syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)))
        os.close(ruleset)
        return True

    def confine(self, workdir, probing=False):
        """Apply the protections in order. Probing, record which work; for a real job, apply
        exactly those and let any failure propagate, so a job never runs less confined."""
        steps = {"rlimits": self.set_rlimits, "uid_drop": self.drop_uid,
                 "no_capabilities": self.drop_capabilities, "no_new_privs": self.no_new_privs,
                 "landlock": lambda: self.landlock(workdir)}
        applied = {}
        for name, step in steps.items():
            if probing:
                try:
                    applied[name] = step()
                except OSError:
                    applied[name] = False
            elif self.confinement[name]:
                step()
        return applied

    def probe(self):
        """Find out which protections work here by applying them all in a throwaway child."""
        workdir = self.make_workdir()
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                found = self.confine(workdir, probing=True)
                os.write(write_end, json.dumps(found).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            found = json.loads(pipe.read())
        os.waitpid(child, 0)
        os.rmdir(workdir)
        self.confinement = found
        landlock_abi_in_force = self.abi if found["landlock"] else 0
        return {
            **self.namespaces,
            **found,
            # Root ignores RLIMIT_NPROC: it binds only once the uid is dropped.
            "process_limit": found["rlimits"] and (found["uid_drop"] or os.getuid() != 0),
            "landlock_network": landlock_abi_in_force >= 4,
            "landlock_scope": landlock_abi_in_force >= 6,
            "wall_timeout": True, "temp_dir": True, "minimal_env": True, "output_cap": True,
        }

    def make_workdir(self):
        """A new directory that only the job's uid can use."""
        workdir = os.path.join(self.temp_root, f"phi-eval-{os.urandom(8).hex()}")
        os.mkdir(workdir, 0o700)
        if self.drop_to:
            os.chown(workdir, *self.drop_to)
        return workdir

    # ------------------------------------------------------------ one job

    def run(self, program, tests):
        start = time.monotonic()
        workdir = self.make_workdir()
        output = JobOutput()
        nonce = os.urandom(16).hex()
        runner = None
        try:
            runner = os.fork()
            if runner == 0:
                self.runner(workdir, output, nonce, {"program": program, "tests": tests})
            output.close_write_ends()
            outcome = self.watch(runner, output)
        finally:
            exit_status = self.end_job(runner)
            output.drain_and_close()
            remove_tree(workdir)
        status, reason = outcome or self.classify(parse_report(output.kept["report"], nonce), exit_status)
        return {"status": status, "reason": reason, "duration_s": time.monotonic() - start,
                "stdout": output.text("stdout"), "stderr": output.text("stderr")}

    def watch(self, runner, output):
        """Collect output until the runner exits, the time is up or the output cap is hit.
        Returns None, or (status, reason) when the job must be stopped."""
        limits = self.limits
        deadline = time.monotonic() + limits["timeout_s"]
        poller = select.poll()
        for fd in output.readers:
            poller.register(fd, select.POLLIN)
        pidfd = os.pidfd_open(runner)
        poller.register(pidfd, select.POLLIN)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout", f"wall-clock timeout after {limits['timeout_s']:g} s"
                events = poller.poll(remaining * 1000)
                for fd, _ in events:
                    if fd != pidfd and not output.read(fd):
                        poller.unregister(fd)
                if output.too_much(limits["output_bytes"]):
                    return "output_limit", f"wrote more than {limits['output_bytes']} bytes of output"
                if any(fd == pidfd for fd, _ in events):
                    return None
        finally:
            os.close(pidfd)

    def end_job(self, runner):
        """Kill what is left of the job and reap it all. Returns the runner's wait status."""
        if runner is None:
            return None
        own_namespace = self.namespaces["pid_namespace"]
        # From PID 1, -1 means every other process of the namespace: all of them the job's.
        os.kill(-1 if own_namespace else runner, signal.SIGKILL)
        exit_status = os.waitpid(runner, 0)[1]
        if own_namespace:
            reap_all()  # the orphans that re-parented to us as their parents died
        else:
            kill_orphans()
        return exit_status

    def classify(self, report, exit_status):
        """Status from the runner's record or, failing that, from how it ended."""
        if report:
            status, reason = report
            return status, reason
        if os.WIFSIGNALED(exit_status):
            number = os.WTERMSIG(exit_status)
            if number == signal.SIGXCPU:
                return "timeout", f"CPU time limit ({self.cpu_seconds} s) exceeded"
            return "killed", f"killed by {signal.Signals(number).name}"
        return "exited_early", f"exited with code {os.waitstatus_to_exitcode(exit_status)} before the tests finished"

    def runner(self, workdir, output, nonce, sources):
        """Confine this process, run the program and the tests, report. Never returns: this
        is a fork of the zygote and must not carry on as one."""
        try:
            report_fd = output.write_end("report")
            try:
                os.setsid()  # out of the harness's process group and terminal
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.chdir(workdir)
                self.confine(workdir)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(output.write_end("stdout"), 1)
                os.dup2(output.write_end("stderr"), 2)
                close_fds_except([report_fd, *self.import_handles])
                os.environ["HOME"] = os.environ["TMPDIR"] = workdir
                status, reason = execute(sources)
            except MemoryError:
                status, reason = "memory", "MemoryError: ran out of memory (memory limit)"
            except BaseException as error:  # e.g. confinement failed: never run unconfined
                status, reason = "error", f"sandbox failure: {error!r}"
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os.write(report_fd, f"{nonce} {json.dumps([status, reason])}\n".encode())
        finally:
            os._exit(0)


class JobOutput:
    """The job's stdout, stderr and report pipes, read without blocking into bounded buffers."""

    def __init__(self):
        self.pipes = {name: os.pipe() for name in ("stdout", "stderr", "report")}
        self.readers = {read_end: name for name, (read_end, _) in self.pipes.items()}
        for fd in self.readers:
            os.set_blocking(fd, False)
        self.kept = dict.fromkeys(self.pipes, b"")
        self.sizes = dict.fromkeys(self.pipes, 0)

    def write_end(self, name):
        return self.pipes[name][1]

    def close_write_ends(self):
        for _, write_end in self.pipes.values():
            os.close(write_end)

    def read(self, fd):
        """Read what is there, keeping a bounded prefix. False once nothing more comes."""
        name = self.readers[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        self.sizes[name] += len(data)
        room = (REPORT_BYTES if name == "report" else EXCERPT_BYTES) - len(self.kept[name])
        if room > 0:
            self.kept[name] += data[:room]
        return bool(data)

    def too_much(self, output_bytes):
        return self.sizes["stdout"] + self.sizes["stderr"] > output_bytes or self.sizes["report"] > REPORT_BYTES

    def drain_and_close(self):
        for fd in self.readers:
            while self.read(fd):
                pass
            os.close(fd)

    def text(self, name):
        return self.kept[name].decode(errors="replace")


def parse_report(data, nonce):
    """The runner's [status, reason] record if it carries this job's nonce, else None."""
    for line in data.decode(errors="replace").splitlines():
        tag, _, record = line.partition(" ")
        if tag == nonce:
            try:
                status, reason = json.loads(record)
            except ValueError:
                continue
            if status in STATUSES and isinstance(reason, str):
                return status, reason
    return None


def reap_all():
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass


def kill_orphans():
    """Without a PID namespace, detached descendants re-parent to the zygote (a child
    subreaper): kill them, round after round, until none are left."""
    while True:
        try:
            with open("/proc/thread-self/children") as handle:
                children = [int(pid) for pid in handle.read().split()]
        except OSError:
            children = []
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        for pid in children:
            os.waitpid(pid, 0)
        try:  # children that had already exited (zombies are not listed)
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        if not children:
            return


def remove_tree(path):
    """Remove the job's directory even where the program made parts of it unreadable
    (as root nothing can stop us; otherwise the files are ours to chmod)."""
    def open_up_and_retry(function, failed, _):
        try:
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, onerror=open_up_and_retry)
            else:
                function(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=open_up_and_retry)


# ---------------------------------------------------------------- running program and tests

def dict_version_reader():
    """A function telling whether a dict changed, without touching its contents.

    Restoring every module after every program would touch (reference-count) thousands of
    objects, and each touch copies a memory page the fork had shared: most of a job's cost.
    CPython 3.10-3.13 bump a dict's ma_version_tag on every change (PEP 509), so reading it
    says which dicts need restoring. Checked here, with a fallback (None: restore them all)
    for interpreters where the field moved or stopped changing.
    """
    offset = 2 * ctypes.sizeof(ctypes.c_void_p) + ctypes.sizeof(ctypes.c_ssize_t)  # after PyObject_HEAD, ma_used
    read = ctypes.c_uint64.from_address

    def version(address):
        return read(address + offset).value

    probe = {"key": 1}
    before = version(id(probe))
    probe["key"] = 2  # same size, so only the version can tell
    after = version(id(probe))
    return version if before != after == version(id(probe)) else None


def snapshot():
    """The interpreter state the tests must see, taken once before any program runs.
    PROGRAM_MAIN, the module programs run as, is left out: its contents must survive."""
    version = dict_version_reader()
    dicts = [vars(module) for module in sys.modules.values()
             if isinstance(module, type(sys)) and module is not PROGRAM_MAIN]
    dicts.sort(key=lambda namespace: namespace is not vars(builtins))  # builtins first
    dicts += [sys.modules, sys.path_importer_cache]
    return {"version": version, "dicts": dicts, "saved": [dict(namespace) for namespace in dicts],
            "addresses": [id(namespace) for namespace in dicts],
            "versions": [version(id(namespace)) for namespace in dicts] if version else None,
            "path": list(sys.path), "meta_path": list(sys.meta_path), "path_hooks": list(sys.path_hooks),
            "recursion_limit": sys.getrecursionlimit(), "int_max_str_digits": sys.get_int_max_str_digits()}


def restore(pristine):
    """Undo the program's monkeypatching: module contents (builtins first, so nothing after
    that calls a patched builtin), sys.modules (modules the program imported are dropped, so
    tests import them afresh), import machinery, recursion limit and trace hooks."""
    version, versions = pristine["version"], pristine["versions"]
    for index, address in enumerate(pristine["addresses"]):
        if version and version(address) == versions[index]:
            continue
        current, saved = pristine["dicts"][index], pristine["saved"][index]
        current.update(saved)
        for key in [key for key in current if key not in saved]:
            del current[key]
    sys.path[:] = pristine["path"]
    sys.meta_path[:] = pristine["meta_path"]
    sys.path_hooks[:] = pristine["path_hooks"]
    sys.setrecursionlimit(pristine["recursion_limit"])
    sys.set_int_max_str_digits(pristine["int_max_str_digits"])
    sys.settrace(None)
    sys.setprofile(None)


def execute(sources):
    """Run the program, then the tests in its namespace; (status, reason)."""
    # Taken before the program runs: it could rebind these names in this module.
    restore_state, pristine, describe, namespace = restore, PRISTINE, outcome_of, vars(PROGRAM_MAIN)
    phase = "program"
    try:
        exec(compile(sources["program"], "<program>", "exec"), namespace)
        restore_state(pristine)
        namespace["__builtins__"] = builtins
        phase = "tests"
        exec(compile(sources["tests"], "<tests>", "exec"), namespace)
        outcome = "passed", "all tests passed"
    except BaseException as error:
        restore_state(pristine)
        outcome = describe(error, phase, sources)
    # Describing the error may have run program code (its __str__): restore once more
    # before anything else runs.
    restore_state(pristine)
    return outcome


def outcome_of(error, phase, sources):
    """The status and a one-line reason for an exception raised in `phase`."""
    if isinstance(error, MemoryError):
        return "memory", "MemoryError: ran out of memory (memory limit)"
    try:
        if isinstance(error, SystemExit):
            return "exited_early", f"SystemExit({error.code!r}) raised in the {phase} before the tests finished"
        status = "failed" if phase == "tests" and isinstance(error, AssertionError) else "error"
        where, line = phase, error.lineno if isinstance(error, SyntaxError) else None
        traceback = error.__traceback__
        while traceback is not None:  # the innermost frame of the program or the tests
            filename = traceback.tb_frame.f_code.co_filename
            if filename in ("<program>", "<tests>"):
                where, line = filename.strip("<>"), traceback.tb_lineno
            traceback = traceback.tb_next
        text = error.msg if isinstance(error, SyntaxError) else str(error)
        message = f"{type(error).__name__}: {text}" if text else type(error).__name__
        lines = sources[where].splitlines()
        if line and 0 < line <= len(lines):
            message += f" ({where} line {line}: {lines[line - 1].strip()})"
        return status, " ".join(message.split())[:REASON_CHARS]
    except BaseException:
        return "error", f"{type(error).__name__} raised in the {phase}"


# The module programs run as, made once so every job forks it empty; and the state that
# restore() brings back. Both are set in main().
PROGRAM_MAIN = None
PRISTINE = None


def main():
    global PROGRAM_MAIN, PRISTINE
    config = json.loads(sys.argv[1])
    sys.argv = [""]  # what programs see, as under `python -`
    sys.dont_write_bytecode = True  # never write into the Python installation
    os.environ.clear()
    os.environ.update(JOB_ENV)
    # No PR_SET_PDEATHSIG here: it fires when the harness *thread* that started us ends. When
    # the harness goes, our stdin reaches its end and the loop below stops.
    namespaces = enter_worker_namespaces(config["temp_root"], TMPFS_FILES * config["limits"]["file_size_mb"])
    if namespaces["pid_namespace"]:
        become_pid_one()
        # As PID 1 with the default action, no job can interrupt us (signals from inside
        # the namespace are dropped); runners put Python's handler back.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    else:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come to us, not to the machine's init
    import_handles = make_imports_reachable() if os.getuid() == 0 else []
    worker = Worker(config, namespaces, import_handles)
    send(1, worker.probe())
    PROGRAM_MAIN = sys.modules["__main__"] = type(sys)("__main__")
    PRISTINE = snapshot()
    gc.freeze()  # a collection in a job then never walks (and so copies) the zygote's objects
    while True:
        job = receive(0)  # None once the harness closed the pipe or died
        if job is None:
            return
        try:
            verdict = worker.run(job["program"], job["tests"])
        except Exception as error:  # a sandbox failure: report it, keep serving
            verdict = {"status": "error", "reason": f"sandbox failure: {error!r}", "duration_s": 0.0,
                       "stdout": "", "stderr": ""}
        send(1, verdict)


if __name__ == "__main__":
    main()
