"""What every task is (a dataset, a way to turn docs into per-sample records, and metrics over them),
and the code-generation kind: a prompt per doc, and a program + tests the sandbox executes.

A task's records are one dict per sample, in doc order. Each carries "doc_id" and "scores": the
per-sample value of every metric results.json reports for the task (e.g. {"acc": 1.0, "acc_norm": 0.0}
or {"pass@1": 0.0}); a doc's value of a metric is the mean over its samples. The paired tests of the
leaderboard and shard merging rely on that shape.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phi_eval.metrics import pass_at_k_metrics

if TYPE_CHECKING:
    from phi_eval.steps import EvalContext


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def doc_hash(doc: dict) -> str:
    return short_hash(repr(sorted((k, str(v)) for k, v in doc.items())))


@dataclass(frozen=True)
class Task(ABC):
    name: str
    version: str
    n_shot: int
    description: str

    output_type = "generate_until"
    needs_sandbox = False  # True: the run starts the sandbox's workers

    @abstractmethod
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        """Docs in a stable order, each with a unique "doc_id"."""

    @abstractmethod
    def samples(self, model, docs: list[dict], ctx: EvalContext) -> list[dict]:
        """One record per sample, in doc order (see the module docstring)."""

    @abstractmethod
    def metrics(self, records: list[dict]) -> dict[str, float]:
        """lm-eval-style metrics: {"<metric>,<filter>": value, "<metric>_stderr,<filter>": stderr}."""

    def generation(self, ctx: EvalContext) -> dict | None:
        """The generation settings the task used (results.json's generation_kwargs), None if it generates nothing."""
        return None

    def higher_is_better(self, metric: str) -> bool:
        """results.json's higher_is_better for a metric (a count or a p-value reported beside the scores: False)."""
        return True

    def missing_local_data(self, data_dir: Path) -> str | None:
        """Why `data_dir` cannot supply this task's items, where a cheap look tells (None: it may)."""
        return None

    def limit_docs(self, docs: list[dict], limit: int) -> list[dict]:
        """The docs `--limit N` keeps: the first N (a task may keep N per part instead)."""
        return docs[:limit]

    def n_samples(self, records: list[dict]) -> int:
        """Samples per doc (the "repeats" of results.json)."""
        docs = {r["doc_id"] for r in records}
        return len(records) // len(docs) if docs else 0

    def config(self) -> dict:
        """lm-eval-style description of the task, for results.json's "configs"."""
        return {"task": self.name, "output_type": self.output_type, "num_fewshot": self.n_shot,
                "description": self.description, "metadata": {"version": self.version}}


@dataclass(frozen=True)
class CodeTask(Task):
    """Subclasses define where docs come from and how a completion becomes a program."""

    stop: tuple[str, ...] = ()
    max_new_tokens: int = 512

    needs_sandbox = True

    @abstractmethod
    def prompt(self, doc: dict) -> str:
        """What the model is asked to continue."""

    @abstractmethod
    def program(self, doc: dict, completion: str) -> str:
        """The candidate code the sandbox runs before the tests."""

    @abstractmethod
    def tests(self, doc: dict) -> str:
        """Trusted test code, run after the program in the same namespace."""

    def generation(self, ctx: EvalContext) -> dict:
        return ctx.generation_config(self.max_new_tokens, self.stop).to_dict()

    def samples(self, model, docs: list[dict], ctx: EvalContext) -> list[dict]:
        from phi_eval.models import GenerationRequest

        config = ctx.generation_config(self.max_new_tokens, self.stop)
        n = ctx.samples_per_doc(model, docs)
        requests = [GenerationRequest(self.prompt(doc), config, s, doc["doc_id"]) for doc in docs for s in range(n)]
        completions = ctx.generate(model, requests)
        programs = [(self.program(docs[i // n], c["text"]), self.tests(docs[i // n]))
                    for i, c in enumerate(completions)]
        verdicts = ctx.execute(programs)
        records = []
        for i, (request, completion, verdict) in enumerate(zip(requests, completions, verdicts)):
            doc = docs[i // n]
            records.append({
                **generation_record(doc, request, completion),
                "passed": verdict["passed"],
                "status": verdict["status"],
                "error_kind": None if verdict["passed"] else verdict["status"],
                "reason": verdict["reason"],
                "duration_s": verdict["duration_s"],
                "scores": {"pass@1": float(verdict["passed"])},
                "doc_hash": doc_hash(doc),
                "prompt_hash": short_hash(request.prompt),
                "target_hash": short_hash(self.tests(doc)),
            })
        return records

    def metrics(self, records: list[dict]) -> dict[str, float]:
        return pass_at_k_metrics(correct_per_doc(records))

    def config(self) -> dict:
        return {**super().config(),
                "generation_kwargs": {"until": list(self.stop), "max_gen_toks": self.max_new_tokens},
                "metric_list": [{"metric": "pass@k", "aggregation": "mean", "higher_is_better": True}]}


def generation_record(doc: dict, request, completion: dict) -> dict:
    """The fields every record of a generated sample starts with."""
    return {"doc_id": doc["doc_id"], "sample_index": request.sample_index, "prompt": request.prompt,
            "completion": completion["text"], "finish_reason": completion["finish_reason"]}


def per_doc_means(records: list[dict], score: str) -> list[float]:
    """Per doc, the mean of a per-sample score over the doc's samples, in first-seen doc order."""
    per_doc: dict[str, list[float]] = {}
    for record in records:
        per_doc.setdefault(record["doc_id"], []).append(record["scores"][score])
    return [sum(values) / len(values) for values in per_doc.values()]


def correct_per_doc(records: list[dict]) -> list[tuple[int, int]]:
    """[(samples, passed samples)] per doc, in first-seen doc order."""
    counts: dict[str, list[int]] = {}
    for record in records:
        entry = counts.setdefault(record["doc_id"], [0, 0])
        entry[0] += 1
        entry[1] += bool(record["passed"])
    return [(n, c) for n, c in counts.values()]
