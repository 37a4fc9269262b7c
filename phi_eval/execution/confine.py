"""The kernel-enforced confinement a runner applies to itself before any program runs:
rlimits, an unprivileged uid, no capabilities, no_new_privs, Landlock, seccomp; and what the
worker prepares for the uid drop (import paths the uid can reach, the uid's task count).

Standard library only (ctypes); the worker script imports it before anything of phi_eval.
"""
import ctypes
import errno
import os
import resource
import stat
import sys

libc = ctypes.CDLL(None, use_errno=True)
# Looked up once, here: a lookup creates objects, and whatever a forked job writes to costs a
# copied memory page.
capset, prctl, syscall = (getattr(libc, name) for name in ("capset", "prctl", "syscall"))

PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
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
OPEN_FILES = 256

# seccomp: system calls refused with EPERM. Kernel keyrings, SysV and POSIX message-queue IPC
# (objects that outlive the process and escape its limits), io_uring (which bypasses these
# checks), new namespaces (a user namespace hands back capabilities), and tracing others.
REFUSED_SYSCALLS = (
    "keyctl", "add_key", "request_key",
    "shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semctl", "semtimedop",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns", "mount", "umount2", "pivot_root", "ptrace", "process_vm_readv", "process_vm_writev",
    "bpf", "perf_event_open", "userfaultfd",
)
AF_UNIX = 1
# Loaded by name: ctypes.util.find_library would import subprocess, tempfile, random and
# threading into the zygote, which every job pays for (each page at fork, copy-on-write, exit).
SECCOMP_LIBRARY = "libseccomp.so.2"
CLONE_NEWUSER = 0x10000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7


def scmp_act_errno(number):
    return 0x00050000 | (number & 0xFFFF)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


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
NO_FLAGS = ctypes.c_uint32(0)


def with_truncate(rights):
    """Who may write a file may truncate it (a right of its own since ABI 3)."""
    return rights | FS_TRUNCATE if rights & FS_WRITE_FILE else rights


def check(result):
    """Turn a libc-style -1 (or negative errno) return into OSError."""
    if result < 0:
        number = ctypes.get_errno() if result == -1 else -result
        raise OSError(number, os.strerror(number))
    return result


def set_process_name(name):
    """The name `ps` and `top` show (phi-worker, phi-judge, phi-zygote, phi-runner)."""
    prctl(PR_SET_NAME, name, 0, 0, 0)


def landlock_abi():
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    version = syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(version, 0)


def readable_paths():
    paths = READABLE_ROOTS + [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                              os.path.dirname(os.path.realpath(sys.executable))]
    paths += [entry for entry in sys.path if entry]
    return sorted({os.path.realpath(path) for path in paths if os.path.exists(path)})


def seccomp_filter():
    """A seccomp filter refusing REFUSED_SYSCALLS, unix-domain sockets (a host socket reachable
    by path) and clone(CLONE_NEWUSER); clone3, whose flags a filter cannot read, answers ENOSYS
    so that libc falls back to clone. Built once with libseccomp and exported as BPF, so that
    each runner loads it with one prctl(). Returns (sock_fprog, its buffer), or None without
    libseccomp."""
    try:
        lib = ctypes.CDLL(SECCOMP_LIBRARY, use_errno=True)
    except OSError:
        from ctypes.util import find_library  # noqa: PLC0415 (only where the usual name is missing)
        path = find_library("seccomp")
        if not path:
            return None
        lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ScmpArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not context:
        return None

    def refuse(name, code=errno.EPERM, *conditions):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not a system call on this architecture
            return
        array = (ScmpArgCmp * max(len(conditions), 1))(*conditions)
        check(lib.seccomp_rule_add_array(context, scmp_act_errno(code), number, len(conditions), array))

    for name in REFUSED_SYSCALLS:
        refuse(name)
    refuse("socket", errno.EPERM, ScmpArgCmp(0, SCMP_CMP_EQ, AF_UNIX, 0))
    refuse("clone", errno.EPERM, ScmpArgCmp(0, SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    refuse("clone3", errno.ENOSYS)
    read_end, write_end = os.pipe()
    try:
        check(lib.seccomp_export_bpf(context, write_end))
    finally:
        os.close(write_end)
        lib.seccomp_release(context)
    with os.fdopen(read_end, "rb") as pipe:
        program = pipe.read()
    buffer = ctypes.create_string_buffer(program, len(program))
    return SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p)), buffer


BEFORE_JOB = ("rlimits", "no_new_privs", "landlock", "seccomp")
AT_JOB = ("uid_drop", "no_capabilities")


class Confinement:
    """What the worker decided at start-up; apply() confines the calling (runner) process."""

    def __init__(self, limits, drop_to, max_tasks):
        self.limits = limits
        self.drop_to = drop_to
        self.cpu_seconds = int(limits["timeout_s"]) + 2
        self.max_tasks = max_tasks
        self.abi = landlock_abi()
        self.landlock_fds = {}
        if self.abi:
            for path in readable_paths():
                self.landlock_fds[os.open(path, os.O_PATH | os.O_CLOEXEC)] = FS_READ
            for path, rights in DEVICES.items():
                if os.path.exists(path):
                    self.landlock_fds[os.open(path, os.O_PATH | os.O_CLOEXEC)] = rights
        self.landlock_prepared = self.landlock_rules() if self.abi else None
        self.seccomp = seccomp_filter()
        self.works = {}  # step name -> whether it works here (set by probing)

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

    def landlock_rules(self):
        """The ruleset's attributes and the rules for the fixed paths, built once: each runner
        then adds only its own directory's."""
        handled_fs = (1 << FS_RIGHT_COUNT_BY_ABI.get(self.abi, FS_RIGHT_COUNT_LATEST)) - 1
        attr = RulesetAttr(handled_fs, NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0,
                           SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0)
        rules = [PathBeneathAttr(with_truncate(rights) & handled_fs, fd) for fd, rights in self.landlock_fds.items()]
        return attr, ctypes.c_size_t(ctypes.sizeof(attr)), handled_fs, rules

    def landlock(self, workdir):
        """Writes only beneath the job's directory; reads only of system and Python files;
        no TCP; no signals or abstract unix sockets reaching outside the job."""
        if not self.abi:
            return False
        attr, attr_size, handled_fs, rules = self.landlock_prepared
        ruleset = check(syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), attr_size, NO_FLAGS))
        own = PathBeneathAttr(handled_fs, os.open(workdir, os.O_PATH | os.O_CLOEXEC))
        for rule in (*rules, own):
            check(syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), NO_FLAGS))
        check(syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, NO_FLAGS))
        os.close(ruleset)
        return True

    def load_seccomp(self):
        if not self.seccomp:
            return False
        check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self.seccomp[0]), 0, 0))
        return True

    def apply(self, workdir, probing=False, only=None):
        """Apply the protections in order (those named in `only`, if given). Probing, record
        which work; for a real job, apply exactly those and let any failure propagate, so a
        job never runs less confined. A runner applies BEFORE_JOB while it waits for its job,
        AT_JOB once the job comes: neither Landlock nor seccomp needs to come after the uid
        drop, and a waiting runner keeps root's uid, so none of a job's uid outlives a job."""
        steps = {"rlimits": self.set_rlimits, "no_new_privs": self.no_new_privs,
                 "landlock": lambda: self.landlock(workdir), "seccomp": self.load_seccomp,
                 "uid_drop": self.drop_uid, "no_capabilities": self.drop_capabilities}
        applied = {}
        for name, step in steps.items():
            if only is not None and name not in only:
                continue
            if probing:
                try:
                    applied[name] = step()
                except OSError:
                    applied[name] = False
            elif self.works[name]:
                step()
        return applied


# ---------------------------------------------------------------- for the uid drop

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
