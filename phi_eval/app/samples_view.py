"""The samples view: a run's per-sample records (OUT/<model>/samples_<task>.jsonl), so that for one task
item every model's output, verdict and error can be read side by side.

Filters work on items: "passed" keeps the items every model passed (all samples), "failed" the items no
model passed once, "differs" the items whose models' pass rates differ.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.report.results import read_samples

FILTERS = ("all", "passed", "failed", "differs")
SAMPLES_GLOB = "samples_*.jsonl"


@dataclass(frozen=True)
class PassCount:
    passed: int
    total: int

    @property
    def rate(self) -> float:
        return self.passed / self.total

    def label(self) -> str:
        if self.total == 1:
            return "passed" if self.passed else "failed"
        return f"{self.passed}/{self.total} passed"


class RunSamples:
    """task -> model -> doc_id -> that item's sample records (in sample order)."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise UsageError(f"run directory {directory} does not exist; give the --out directory of `phi-eval run`")
        model_dirs = [self.directory] if any(self.directory.glob(SAMPLES_GLOB)) else sorted(
            d for d in self.directory.iterdir() if d.is_dir() and any(d.glob(SAMPLES_GLOB)))
        if not model_dirs:
            raise UsageError(f"no {SAMPLES_GLOB} files in {directory} or its subdirectories; "
                             "give the --out directory of `phi-eval run`")
        self.tasks: dict[str, dict[str, dict[str, list[dict]]]] = {}
        for model_dir in model_dirs:
            model = _model_name(model_dir)
            for path in sorted(model_dir.glob(SAMPLES_GLOB)):
                task = path.stem.removeprefix("samples_")
                items = self.tasks.setdefault(task, {}).setdefault(model, {})
                for record in read_samples(path):
                    items.setdefault(str(record["doc_id"]), []).append(record)
        for models in self.tasks.values():
            for items in models.values():
                for records in items.values():
                    records.sort(key=lambda r: r.get("sample_index", 0))

    def models(self, task: str) -> list[str]:
        return list(self._task(task))

    def verdicts(self, task: str, doc_id: str) -> dict[str, PassCount | None]:
        """Each model's verdict on the item; None where the model has no record of it."""
        return {model: _verdict(items.get(doc_id)) for model, items in self._task(task).items()}

    def items(self, task: str, keep: str = "all") -> list[str]:
        """The task's item ids (in file order) that pass the filter."""
        if keep not in FILTERS:
            raise UsageError(f"unknown filter {keep!r}; use one of {', '.join(FILTERS)}")
        doc_ids = list(dict.fromkeys(d for items in self._task(task).values() for d in items))
        return [d for d in doc_ids if _keeps(keep, [v for v in self.verdicts(task, d).values() if v])]

    def item_table(self, task: str, keep: str = "all") -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the item list: the id, then each model's verdict."""
        models = self.models(task)
        rows = []
        for doc_id in self.items(task, keep):
            verdicts = self.verdicts(task, doc_id)
            rows.append([doc_id] + [verdicts[m].label() if verdicts[m] else "—" for m in models])
        return ["item"] + models, rows

    def records(self, task: str, doc_id: str) -> dict[str, list[dict]]:
        """Every model's sample records of one item (models without it are left out)."""
        if not any(doc_id in items for items in self._task(task).values()):
            raise UsageError(f"{task} has no item {doc_id!r} in this run; pick one from the list")
        return {model: items[doc_id] for model, items in self._task(task).items() if doc_id in items}

    def _task(self, task: str) -> dict[str, dict[str, list[dict]]]:
        if task not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UsageError(f"this run has no samples of task {task!r} (it has: {known})")
        return self.tasks[task]


def load_run(directory) -> RunSamples:
    """The run's samples, read again only when a samples file changed (the view asks on every click)."""
    root = Path(directory or "").expanduser()
    if not str(directory or "").strip() or not root.is_dir():
        raise UsageError(f"run directory {directory!r} does not exist; give the --out directory of `phi-eval run`")
    files = sorted([*root.glob(SAMPLES_GLOB), *root.glob(f"*/{SAMPLES_GLOB}")])
    return _load(str(root.resolve()), tuple((str(p), p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=4)
def _load(directory: str, stamp: tuple) -> RunSamples:
    return RunSamples(directory)


def _model_name(model_dir: Path) -> str:
    """The run's model name from its results.json, else the directory's name (the model's slug)."""
    try:
        name = json.loads((model_dir / "results.json").read_text(encoding="utf-8")).get("model_name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else model_dir.name


def _verdict(records: list[dict] | None) -> PassCount | None:
    if not records:
        return None
    return PassCount(sum(r.get("passed") is True for r in records), len(records))


def _keeps(keep: str, verdicts: list[PassCount]) -> bool:
    if keep == "all":
        return True
    if keep == "passed":
        return all(v.passed == v.total for v in verdicts)
    if keep == "failed":
        return all(v.passed == 0 for v in verdicts)
    return len({v.rate for v in verdicts}) > 1
