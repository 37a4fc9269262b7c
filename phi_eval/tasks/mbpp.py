"""MBPP: the test split (task ids 11-510) with the MBPP paper's 3-shot prompt (examples 2, 3, 4).

The prompt is lm-eval's `mbpp` task's, character for character: the problem text, its three
test asserts, then "[BEGIN]"; the shots end their code with "[DONE]", the stop sequence.
"""
from __future__ import annotations

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
        return completion

    def tests(self, doc: dict) -> str:
        return "\n".join([doc.get("test_setup_code") or "", *doc["test_list"]]) + "\n"


MBPP_TASK = MBPP(
    name="mbpp",
    version="1.0",
    n_shot=3,
    stop=("[DONE]",),
    max_new_tokens=256,
    description="MBPP (Austin et al. 2021), test split 11-510, 3-shot prompt with the test asserts shown.",
)
