"""The zygote: PID 1 of the worker's sandbox namespaces, it forks one confined runner per job.

The worker (worker.py) starts it once and talks to it over a SOCK_SEQPACKET pair:
    {"probe": true} -> {step: bool, ...}           which confinement steps work here
    {"next": true} + 4 descriptors -> {}           start the first job's runner
    {"end": true} + 4 descriptors -> {"status": WAIT_STATUS, "by_itself": bool}   kill what is
        left of the job and reap it all; then, answer sent, unmount its directory and start
        the next job's runner
The descriptors are a runner's request and reply pipes and its stdout and stderr. Runners are
started one job ahead, so that their fork and start-up are off the path from one job to the
next. A waiting runner, running nothing of a program, is confined but for its uid (see
confine.BEFORE_JOB): it drops to the job's uid once the judge's first request comes, so no
process of a job's uid exists between jobs.

Each job gets a fresh tmpfs as its directory (so clean-up is one unmount, whatever the program
left there) and a runner that moves itself into the worker's memory cgroup, then applies
confine.Confinement (rlimits, uid, capabilities, no_new_privs, Landlock, seccomp) and serves the
judge (runner.py). In its own PID namespace the zygote ends a job with one kill(-1, SIGKILL):
every other process there is the job's, detached children and fork bombs included. Without one,
it is a child subreaper and kills, round after round, the orphans it inherits.
"""
import _signal
import json
import os
import select
import signal
import socket
import sys

import confine
import runner
import wire

MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4
TMPFS_FILES = 4  # a job's tmpfs holds this many files of the largest size allowed
TMPFS_INODES = 20_000  # and this many files and directories
GRACE_S = 0.2
MESSAGE_BYTES = 1 << 14  # the control messages are small; a bigger buffer costs pages per job
OUR_MODULES = ("wire", "runner", "judge", "confine", "zygote", "cgroup", "worker")


class Zygote:
    def __init__(self, config, control, confinement, namespaces, job_tmpfs, import_handles):
        self.config, self.control, self.confinement = config, control, confinement
        self.namespaces, self.pid_one = namespaces, namespaces["pid_namespace"]
        self.job_tmpfs, self.import_handles = job_tmpfs, import_handles
        self.in_cgroup = join_cgroup(config.get("cgroup"))
        self.tmpfs_options = f"size={TMPFS_FILES * config['limits']['file_size_mb']}m,nr_inodes={TMPFS_INODES},mode=0700"
        if confinement.drop_to:
            self.tmpfs_options += ",uid={0},gid={0}".format(config["uid"])
        self.tmpfs_options = self.tmpfs_options.encode()
        self.runner_pid = self.workdir = None

    def serve(self):
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.control, MESSAGE_BYTES, 8)
            except OSError:
                return
            if not data:
                return  # the worker has gone
            message = wire.loads(data)  # wire's, not json's: fewer objects touched per job
            if "end" in message:
                reply = self.end(message.get("grace"))
            else:
                reply = self.probe() if "probe" in message else {}
            self.control.send(wire.dumps(reply))
            self.remove_workdir()
            if fds:
                self.start(fds)

    def make_workdir(self, name):
        workdir = os.path.join(self.config["temp_root"], name)
        os.mkdir(workdir, 0o700)
        if self.job_tmpfs:
            confine.check(confine.libc.mount(b"tmpfs", os.fsencode(workdir), b"tmpfs", MS_NOSUID | MS_NODEV,
                                             self.tmpfs_options))
        elif self.confinement.drop_to:
            os.chown(workdir, *self.confinement.drop_to)
        return workdir

    def remove_workdir(self):
        if self.workdir is None:
            return
        if self.job_tmpfs:
            confine.libc.umount2(os.fsencode(self.workdir), MNT_DETACH)
            os.rmdir(self.workdir)
        else:
            remove_tree(self.workdir)
        self.workdir = None

    def start(self, fds):
        self.workdir = self.make_workdir(f"job-{os.urandom(8).hex()}")
        try:
            pid = os.fork()
            if pid == 0:
                self.become_runner(*fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.runner_pid = pid
        return pid

    def become_runner(self, requests, replies, stdout, stderr):
        """In the forked child: get ready, wait for the judge's first request, confine, then
        serve the judge. Never returns."""
        try:
            os.setsid()  # out of the harness's process group and terminal
            confine.set_process_name(b"phi-runner")
            # _signal, not signal: its wrapper's enum conversions cost more than the call.
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
            if self.in_cgroup:  # born in the zygote's memory cgroup: the OOM killer's first pick
                write_file("/proc/self/oom_score_adj", b"1000")
            os.chdir(self.workdir)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.environ["HOME"] = os.environ["TMPDIR"] = self.workdir
            # Landlock needs the descriptors closed below.
            self.confinement.apply(self.workdir, only=confine.BEFORE_JOB)
            close_fds_except([requests, replies, *self.import_handles])
            for module in OUR_MODULES:  # programs importing these names find their own
                sys.modules.pop(module, None)
            sys.modules["__main__"] = type(sys)("__main__")
            first = wire.receive(requests)
            if first is None:  # the job ended before it needed us
                os._exit(0)
            self.confinement.apply(self.workdir, only=confine.AT_JOB)
        except BaseException as error:  # never run a program less confined than probed
            try:
                os.write(2, f"sandbox failure: {error!r}\n".encode())
            finally:
                os._exit(70)
        runner.serve(requests, replies, first)

    def end(self, grace=False):
        """Kill what is left of the job and reap it all; the runner's wait status, and whether
        it had ended by itself. With `grace`, a runner that stopped answering may first take a
        moment to exit. Its directory goes just after (serve)."""
        status, by_itself = None, False
        if self.runner_pid is not None:
            if grace:
                pidfd = os.pidfd_open(self.runner_pid)
                select.select([pidfd], [], [], GRACE_S)
                os.close(pidfd)
            by_itself = os.waitid(os.P_PID, self.runner_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            os.kill(-1 if self.pid_one else self.runner_pid, signal.SIGKILL)
            status = os.waitpid(self.runner_pid, 0)[1]
            if self.pid_one:
                reap_all()  # the orphans that re-parented to us as their parents died
            else:
                kill_orphans()
        self.runner_pid = None
        return {"status": status, "by_itself": by_itself}

    def probe(self):
        """Apply every confinement step in a throwaway child; record which work."""
        self.workdir = self.make_workdir(f"probe-{os.urandom(8).hex()}")
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                found = self.confinement.apply(self.workdir, probing=True)
                os.write(write_end, json.dumps(found).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            found = json.loads(pipe.read())
        os.waitpid(child, 0)
        self.remove_workdir()
        found.update((name, False) for name in self.config["skip"] if name in found)
        self.confinement.works = found
        return {**found, **self.namespaces, "memory_cgroup": self.in_cgroup}


def join_cgroup(group):
    """Move the zygote into the worker's memory cgroup, so that runners are born there: moving
    each runner in would cost a kernel RCU grace period (~15 ms) per job. Pages the zygote
    already holds stay charged where they were; runners ask the OOM killer to pick them first."""
    if not group:
        return False
    try:
        with open(os.path.join(group[1], "cgroup.procs"), "w") as handle:
            handle.write("0")
        return True
    except OSError:
        return False


def write_file(path, data):
    """os-level: each Python object a runner touches costs it a copied memory page."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def close_fds_except(keep):
    """Close every descriptor from 3 up, except those in `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


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
    """Without a private tmpfs: remove the job's directory even where the program made parts
    of it unreadable (as root nothing can stop us; otherwise the files are ours to chmod)."""
    import shutil  # noqa: PLC0415 (here only: every module the zygote holds makes each fork dearer)
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
