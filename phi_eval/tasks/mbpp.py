"""MBPP: the test split (task ids 11-510) with the MBPP paper's 3-shot prompt (examples 2, 3, 4).

The prompt is lm-eval's `mbpp` task's, character for character: the problem text, its three
test asserts, then "[BEGIN]"; the shots end their code with "[DONE]", the stop sequence.
"""
from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.jsonl import read_json_objects
from phi_eval.tasks.base import CodeTask

HUB_DATASET = ("google-research-datasets/mbpp", "full")
TEST_IDS = range(11, 511)
SHOT_IDS = (2, 3, 4)


def read_local(data_dir: Path) -> list[dict]:
    path = data_dir / "mbpp" / "mbpp.jsonl"
    if not path.exists():
        raise UsageError(f"MBPP data not found at {path}; point --data-dir at a folder holding mbpp/mbpp.jsonl")
    return read_json_objects(path)


def read_hub() -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(*HUB_DATASET)
    except Exception as e:  # datasets raises many types for "no network" / "not cached"
        raise UsageError(f"cannot load MBPP from the hub ({type(e).__name__}); pass --data-dir DIR with "
                         "mbpp/mbpp.jsonl (the layout of the project's shared benchmarks)") from None
    return [dict(row) for split in dataset.values() for row in split]


def format_problem(record: dict) -> str:
    tests = "\n".join(record["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {record['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


@dataclass(frozen=True)
class MBPP(CodeTask):
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        records = read_local(data_dir) if data_dir else read_hub()
        by_id = {int(r["task_id"]): r for r in records}
        missing = [i for i in (*SHOT_IDS, *TEST_IDS) if i not in by_id]
        if missing:
            raise UsageError(f"MBPP data lacks task ids {missing[:5]}...; give the full release (974 problems)")
        shots = "".join(format_problem(by_id[i]) + by_id[i]["code"] + "\n[DONE]\n\n" for i in SHOT_IDS)
        return [{**by_id[i], "doc_id": f"MBPP/{i}", "shots": shots} for i in TEST_IDS]

    def prompt(self, doc: dict) -> str:
        return doc["shots"] + format_problem(doc)

    def program(self, doc: dict, completion: str) -> str:
        # The setup code builds the tests' inputs from the program's classes (MBPP/367's
        # Node): it runs with the program, and the tests receive what it built.
        setup = (doc.get("test_setup_code") or "").replace("\r\n", "\n")
        return f"{completion}\n{setup}\n" if setup.strip() else completion

    def tests(self, doc: dict) -> str:
        shadowing = builtins_redefined(doc["code"])
        return "\n".join(call_program_explicitly(line, shadowing) for line in doc["test_list"]) + "\n"


MBPP_TASK = MBPP(
    name="mbpp",
    version="1.0",
    n_shot=3,
    stop=("[DONE]",),
    max_new_tokens=256,
    description="MBPP (Austin et al. 2021), test split 11-510, 3-shot prompt with the test asserts shown.",
)


def builtins_redefined(code: str) -> set[str]:
    """Functions the reference solution defines under a builtin's name (MBPP/126's `sum`)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and hasattr(builtins, node.name)}


class _ToProgram(ast.NodeTransformer):
    def __init__(self, names):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return ast.copy_location(ast.Attribute(ast.Name("__program__", ast.Load()), node.id, ast.Load()), node)
        return node


def call_program_explicitly(test: str, names: set[str]) -> str:
    """The sandbox's tests always see builtins as the judge's own; a function under test named
    like one is reached as `__program__.NAME` instead."""
    if not names or not any(name in test for name in names):
        return test
    return ast.unparse(_ToProgram(names).visit(ast.parse(test)))
