"""Task registry: names and groups as DESIGN.md lists them."""
from __future__ import annotations

import difflib
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.task_names import GROUPS, TASK_NAMES
from phi_eval.tasks.base import Task
from phi_eval.tasks.humaneval import HUMANEVAL
from phi_eval.tasks.gsm8k import GSM8K_COT
from phi_eval.tasks.gsm8k_code import GSM8K_CODE
from phi_eval.tasks.mbpp import MBPP_TASK
from phi_eval.tasks.multiple_choice import MULTIPLE_CHOICE_TASKS
from phi_eval.tasks.toxigen import TOXIGEN_SAFETY
from phi_eval.tasks.toxigen_cls import TOXIGEN_CLS

TASKS: dict[str, Task] = {task.name: task for task in (
    HUMANEVAL, MBPP_TASK, *MULTIPLE_CHOICE_TASKS, GSM8K_COT, GSM8K_CODE, TOXIGEN_SAFETY, TOXIGEN_CLS)}
assert set(TASKS) == set(TASK_NAMES), "phi_eval/task_names.py lists every registered task"


def resolve_tasks(spec: str, data_dir: Path | None = None) -> list[Task]:
    """"humaneval,code" -> task objects, in order, without duplicates. With a data dir, a group leaves out
    (and says so) the tasks whose local files are missing; a task named alone fails when it loads."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in GROUPS:
            for name in GROUPS[part]:
                reason = TASKS[name].missing_local_data(data_dir) if data_dir else None
                if reason:
                    print(f"phi-eval: {name} skipped: {reason}")
                else:
                    names.append(name)
        elif part in TASKS:
            names.append(part)
        else:
            close = difflib.get_close_matches(part, [*TASKS, *GROUPS], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown task {part!r}{hint}; available: {', '.join([*TASKS, *GROUPS])}")
    if not names:
        raise UsageError("no task given; pass --tasks humaneval,mbpp (or a group: code, phi)")
    return [TASKS[n] for n in dict.fromkeys(names)]
