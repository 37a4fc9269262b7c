"""A memory cgroup per sandbox worker, so that a job's whole process tree shares one memory cap
(RLIMIT_AS binds each process alone: a few forked children together would go far past it).

cgroup v1 (a `memory` hierarchy) and v2 (the unified hierarchy) are both handled; v1 is the
one tested here. The harness creates the group and removes it; each runner moves itself in
before it drops root; the worker reads the OOM-kill count to tell "memory" from "killed".
Standard library only: the worker script imports it too.
"""
import os
import time

ROOTS = {"v1": "/sys/fs/cgroup/memory", "v2": "/sys/fs/cgroup"}


def own_group():
    """(version, directory) of the memory cgroup this process is in, or None."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = [line.rstrip("\n").split(":", 2) for line in handle]
    except OSError:
        return None
    for _, controllers, path in lines:
        if "memory" in controllers.split(",") and os.path.isdir(ROOTS["v1"] + path):
            return "v1", ROOTS["v1"] + path
    for number, controllers, path in lines:
        if number == "0" and controllers == "" and os.path.exists(f"{ROOTS['v2']}{path}/cgroup.controllers"):
            return "v2", os.path.normpath(ROOTS["v2"] + path)
    return None


def create(name, memory_mb):
    """A new memory cgroup below ours, capped at memory_mb with no swap; returns
    (version, path), or None where the machine does not let us (not root, no controller)."""
    found = own_group()
    if found is None:
        return None
    version, parent = found
    path = os.path.join(parent, name)
    limit = str(memory_mb << 20)
    try:
        os.mkdir(path)
    except OSError:
        return None
    try:
        if version == "v1":
            write(path, "memory.limit_in_bytes", limit)
            if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                write(path, "memory.memsw.limit_in_bytes", limit)
        else:
            write(path, "memory.max", limit)
            write(path, "memory.swap.max", "0")
    except OSError:
        remove(path)
        return None
    return version, path


def write(path, name, value):
    with open(os.path.join(path, name), "w") as handle:
        handle.write(value)


def oom_kills(version, path):
    """How many processes the kernel has killed in this group for lack of memory."""
    name = "memory.oom_control" if version == "v1" else "memory.events"
    try:
        with open(os.path.join(path, name)) as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove(path, wait_s=2.0):
    """Remove the group once its last process has gone (a worker's runners die just after it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
