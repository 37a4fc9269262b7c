"""Task registry: names and groups as DESIGN.md lists them."""
from __future__ import annotations

import difflib

from phi_eval.errors import UsageError
from phi_eval.tasks.base import Task
from phi_eval.tasks.humaneval import HUMANEVAL
from phi_eval.tasks.mbpp import MBPP_TASK

TASKS: dict[str, Task] = {task.name: task for task in (HUMANEVAL, MBPP_TASK)}

# Groups name every task of the design; a group expands to those this version provides.
GROUPS: dict[str, tuple[str, ...]] = {
    "code": ("humaneval", "mbpp"),
    "math": ("gsm8k", "gsm8k_code"),
    "commonsense": ("winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag",
                    "openbookqa", "mmlu"),
    "safety": ("toxigen",),
}
GROUPS["phi"] = tuple(name for group in GROUPS.values() for name in group)
PLANNED = set(GROUPS["phi"]) - set(TASKS)


def resolve_tasks(spec: str) -> list[Task]:
    """"humaneval,code" -> task objects, in order, without duplicates."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in GROUPS:
            names += [n for n in GROUPS[part] if n in TASKS]
        elif part in TASKS:
            names.append(part)
        elif part in PLANNED:
            raise UsageError(f"task {part!r} is not in this version yet; available: {', '.join(TASKS)}")
        else:
            close = difflib.get_close_matches(part, [*TASKS, *GROUPS], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown task {part!r}{hint}; available: {', '.join([*TASKS, *GROUPS])}")
    if not names:
        raise UsageError("no task given; pass --tasks humaneval,mbpp (or a group: code, phi)")
    return [TASKS[n] for n in dict.fromkeys(names)]
