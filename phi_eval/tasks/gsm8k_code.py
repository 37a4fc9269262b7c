"""GSM8K "via coding", the phi-1.5 report's setting (Table 4): the model writes `def solution():` whose
return value is the answer; the sandbox runs it and trusted test code compares it with the gold number.

The report does not publish its prompt or its answer check (see ../shared/PHI_FACTS.md §2), so this prompt
is phi-eval's own: the eight chain-of-thought exemplar questions that lm-eval's gsm8k_cot uses, each solved
as a short Python function with the question as its docstring, in the style of program-aided language
models (PAL, Gao et al. 2022). The test problem's function header and docstring end the prompt; the model
writes the body. A returned real number within 1e-3 of the gold answer is correct (PAL's tolerance).

Outcomes: "correct" (passed), "wrong" (returned a different number or not a number), "timed_out" (the
sandbox's wall-clock or CPU limit), "crashed" (any other failure: a syntax error, an exception inside
solution(), running out of memory, exiting early, ...).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from phi_eval.metrics import mean_metric
from phi_eval.tasks.base import CodeTask, per_doc_means
from phi_eval.tasks.gsm8k import COT_EXEMPLARS, load_gsm8k

# One program per exemplar of COT_EXEMPLARS, in the same order.
EXEMPLAR_BODIES = (
    "    trees_before = 15\n    trees_after = 21\n    trees_planted = trees_after - trees_before\n"
    "    return trees_planted\n",
    "    cars_parked = 3\n    cars_arriving = 2\n    return cars_parked + cars_arriving\n",
    "    leah_chocolates = 32\n    sister_chocolates = 42\n    eaten = 35\n"
    "    return leah_chocolates + sister_chocolates - eaten\n",
    "    lollipops_before = 20\n    lollipops_after = 12\n    return lollipops_before - lollipops_after\n",
    "    toys = 5\n    toys_per_parent = 2\n    parents = 2\n    return toys + toys_per_parent * parents\n",
    "    computers = 9\n    computers_per_day = 5\n    days = 4  # monday to thursday\n"
    "    return computers + computers_per_day * days\n",
    "    golf_balls = 58\n    lost_tuesday = 23\n    lost_wednesday = 2\n"
    "    return golf_balls - lost_tuesday - lost_wednesday\n",
    "    money = 23\n    bagels = 5\n    bagel_price = 3\n    return money - bagels * bagel_price\n",
)
SHOT_SEPARATOR = "\n\n"  # two blank lines between functions, as PEP 8
ABS_TOLERANCE = 1e-3
OUTCOMES = {"passed": "correct", "failed": "wrong", "timeout": "timed_out"}  # anything else: "crashed"


def header(question: str) -> str:
    """The function's first lines: `def solution():` and the question as its docstring."""
    escaped = question.replace("\\", "\\\\").replace('"', '\\"')
    return f'def solution():\n    """{escaped}"""\n'


SHOTS = "".join(header(question) + body + SHOT_SEPARATOR for (question, _), body in zip(COT_EXEMPLARS, EXEMPLAR_BODIES))


def gold_number(target: str) -> float:
    return float(target.replace(",", ""))


def outcome(status: str) -> str:
    return OUTCOMES.get(status, "crashed")


@dataclass(frozen=True)
class GSM8KViaCoding(CodeTask):
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        return load_gsm8k(data_dir)

    def prompt(self, doc: dict) -> str:
        return SHOTS + header(doc["question"])

    def program(self, doc: dict, completion: str) -> str:
        return header(doc["question"]) + completion

    def tests(self, doc: dict) -> str:
        # An exception inside solution() is a crash, not a wrong answer: re-raised as RuntimeError so that
        # only the comparisons below can fail with AssertionError.
        return (
            "import math as _math, numbers as _numbers\n"
            "try:\n"
            "    _returned = solution()\n"
            "except Exception as _error:\n"
            "    raise RuntimeError('solution() raised ' + type(_error).__name__) from None\n"
            "assert isinstance(_returned, _numbers.Real) and not isinstance(_returned, bool), "
            "'solution() returned a ' + type(_returned).__name__ + ', not a number'\n"
            "try:\n"
            "    _value = float(_returned)\n"
            "except (OverflowError, ValueError):\n"
            "    _value = _math.inf\n"
            f"assert _math.isclose(_value, {gold_number(doc['target'])!r}, rel_tol=0.0, abs_tol={ABS_TOLERANCE!r}), "
            f"'solution() returned ' + repr(_value) + ', expected {doc['target']}'\n"
        )

    def samples(self, model, docs: list[dict], ctx) -> list[dict]:
        records = super().samples(model, docs, ctx)
        targets = {doc["doc_id"]: doc["target"] for doc in docs}
        for record in records:
            record["outcome"] = outcome(record["status"])
            record["target"] = targets[record["doc_id"]]
            record["scores"] = {"exact_match": float(record["passed"])}
        return records

    def metrics(self, records: list[dict]) -> dict[str, float]:
        if not records:
            return {}
        counts = Counter(record["outcome"] for record in records)
        return {**mean_metric("exact_match,none", per_doc_means(records, "exact_match")),
                **{f"{name},none": counts[name] for name in ("correct", "wrong", "crashed", "timed_out")}}

    def higher_is_better(self, metric: str) -> bool:
        return metric in ("exact_match", "correct")

    def config(self) -> dict:
        return {**super().config(),
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                 "abs_tolerance": ABS_TOLERANCE}],
                "outcome_counts": "correct, wrong, crashed and timed_out are counts of samples, not scores",
                "prompt_source": "phi-eval's own (the phi-1.5 report does not publish its prompt): the 8 "
                                 "gsm8k_cot exemplar questions solved as `def solution():` functions, PAL-style"}


GSM8K_CODE = GSM8KViaCoding(
    name="gsm8k_code",
    version="1.0",
    n_shot=8,
    # HumanEval's stops: the body ends where the next top-level statement begins.
    stop=("\ndef", "\nclass", "\nif", "\nprint", "\n#"),
    max_new_tokens=256,
    description="GSM8K test split via coding (phi-1.5 Table 4): the model writes solution(), the sandbox runs it.",
)
