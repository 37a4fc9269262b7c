"""Benchmark items as contamination checks see them: one text per item, and its code.

What is checked is the whole problem as it could have leaked into training data:
- humaneval: the prompt (signature and docstring) followed by the canonical solution;
- mbpp: the problem statement, a newline, then the reference code.
The AST check compares only the code: for humaneval the prompt plus the solution (a whole
function), for mbpp the reference code. (phi-1 ran its 13-gram check on the HumanEval docstrings
alone; a docstring is part of the text checked here, so its overlaps are found too.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_eval.errors import UsageError

TEXT_OF = {
    "humaneval": lambda doc: doc["prompt"] + doc["canonical_solution"],
    "mbpp": lambda doc: doc["text"] + "\n" + doc["code"],
}
CODE_OF = {
    "humaneval": lambda doc: doc["prompt"] + doc["canonical_solution"],
    "mbpp": lambda doc: doc["code"],
}
WHAT = {"humaneval": "prompt + canonical_solution", "mbpp": "text + newline + code"}


@dataclass(frozen=True)
class Item:
    task: str
    doc_id: str
    text: str
    code: str


def load_items(tasks, data_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    items = []
    for task in tasks:
        if task.name not in TEXT_OF:
            raise UsageError(f"contamination checks do not know the text of {task.name!r} items yet; "
                             f"use {', '.join(TEXT_OF)}")
        docs = task.load_docs(data_dir)
        for doc in docs[:limit] if limit else docs:
            items.append(Item(task.name, doc["doc_id"], TEXT_OF[task.name](doc), CODE_OF[task.name](doc)))
    return items
