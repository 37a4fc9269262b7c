"""A code-generation task: a dataset of docs, a prompt per doc, and a program + tests to execute."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CodeTask(ABC):
    """Subclasses define where docs come from and how a completion becomes a program."""

    name: str
    version: str
    n_shot: int
    stop: tuple[str, ...]
    max_new_tokens: int
    description: str

    output_type = "generate_until"

    @abstractmethod
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        """Docs in a stable order, each with a unique "doc_id"."""

    @abstractmethod
    def prompt(self, doc: dict) -> str:
        """What the model is asked to continue."""

    @abstractmethod
    def program(self, doc: dict, completion: str) -> str:
        """The candidate code the sandbox runs before the tests."""

    @abstractmethod
    def tests(self, doc: dict) -> str:
        """Trusted test code, run after the program in the same namespace."""

    def config(self) -> dict:
        """lm-eval-style description of the task, for results.json's "configs"."""
        return {
            "task": self.name,
            "output_type": self.output_type,
            "num_fewshot": self.n_shot,
            "generation_kwargs": {"until": list(self.stop), "max_gen_toks": self.max_new_tokens},
            "metric_list": [{"metric": "pass@k", "aggregation": "mean", "higher_is_better": True}],
            "description": self.description,
            "metadata": {"version": self.version},
        }
