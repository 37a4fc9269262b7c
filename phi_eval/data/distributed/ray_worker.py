"""Imported by every block's module, so it runs wherever tasks run: inside a Ray worker process, the
`multiprocess` pools that datatrove's Ray actor starts for its tasks spawn their processes instead of
forking them. A Ray worker has dozens of threads; a process forked from it can hang forever on a lock
one of them held at the fork (it happened once in a full test run). The local executor names its start
method itself and is not affected."""
import sys


def in_ray_worker() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray._private.worker.global_worker.mode == ray.WORKER_MODE


if in_ray_worker():
    import multiprocess

    multiprocess.set_start_method("spawn", force=True)
