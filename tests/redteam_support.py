"""What a hostile program could leave behind, looked at from the host: SysV IPC objects, kernel
keys, files in shared temporary places, processes, memory cgroups. Shared by the red-team tests."""
import glob
import os

from phi_eval.execution import cgroup

SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def sysv_objects():
    """Every SysV shared memory segment, message queue and semaphore set of the host's IPC
    namespace (what `ipcs -a` lists)."""
    found = set()
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as handle:
                found |= {f"{kind}: {' '.join(line.split()[:2])}" for line in list(handle)[1:]}
        except OSError:
            pass
    return found


def key_users():
    """uids that hold kernel keys (/proc/key-users lists every uid with a key, whoever reads)."""
    try:
        with open("/proc/key-users") as handle:
            return {line.split(":")[0].strip() for line in handle}
    except OSError:
        return set()


def shared_files():
    return {path for directory in SHARED_DIRS for path in glob.glob(os.path.join(directory, "*"))}


def sandbox_cgroups():
    found = cgroup.own_group()
    return set(glob.glob(os.path.join(found[1], "phi-eval-*"))) if found else set()


def job_processes(uids, marker=None):
    """Processes running as one of these uids, or with `marker` on their command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                uid = next(line.split()[1] for line in status if line.startswith("Uid:"))
                if uid in uids or (marker and marker.encode() in cmdline.read()):
                    found.append(pid)
        except (OSError, StopIteration):
            continue
    return found


def sandbox_uids(sandbox):
    return {str(config["uid"]) for config in sandbox._configs} if os.getuid() == 0 else set()


def owner(path):
    try:
        return str(os.lstat(path).st_uid)
    except OSError:
        return None


def snapshot():
    return {"sysv": sysv_objects(), "keys": key_users(), "files": shared_files()}


def leftovers(before, uids, marker=None):
    """What appeared since `before` (a snapshot()) and is still there, plus live job processes."""
    after = snapshot()
    found = {name: sorted(after[name] - before[name]) for name in after}
    found["keys"] = sorted(uid for uid in found["keys"] if uid in uids)  # other users' keys are not ours
    found["files"] = sorted(path for path in found["files"] if (marker and marker in path) or owner(path) in uids)
    found["processes"] = job_processes(uids, marker)
    return {name: value for name, value in found.items() if value}
