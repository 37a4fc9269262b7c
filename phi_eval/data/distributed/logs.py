"""Task logs go to files only (OUT/logs/PHASE/logs/task_NNNNN.log), not to the console.

datatrove prints every task's log, tracebacks included, to stderr; phi-eval shows one progress
bar and, on bad input, one line. Replacing datatrove's two task-logger hooks is the only switch it
offers; this module is imported by the blocks' package, so it takes effect in every worker.
"""
from __future__ import annotations

import sys

import datatrove.executor.base as executor_base
from loguru import logger


def file_only_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(logfile, level="DEBUG", format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{line} - {message}")
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def close_task_logger(logfile) -> None:
    logger.complete()
    quiet_console()
    logfile.close()


def quiet_console() -> None:
    logger.remove()
    # errors only: datatrove warns once per Ray phase that a local logging folder must be shared
    logger.add(sys.stderr, level="ERROR", format="datatrove: {message}", filter=lambda r: r["exception"] is None)


executor_base.add_task_logger = file_only_task_logger
executor_base.close_task_logger = close_task_logger
