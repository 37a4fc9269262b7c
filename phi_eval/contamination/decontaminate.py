"""Decontaminate a corpus: drop or mask the documents that share n-grams with benchmark items.

The benchmark's n-grams are few, so this needs no corpus index: the corpus streams past a sorted
array of the items' n-gram hashes (the direction lm-eval's janitor works in). Every document
with at least `min_matches` shared n-grams is either dropped or has each shared n-gram's
characters replaced by `mask_with`. The output is JSONL (the input record with its text
replaced, or {"source", "text"} for plain files); the manifest names every document touched,
the items it overlapped and the character spans masked.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from phi_eval.contamination.corpus import iter_documents
from phi_eval.contamination.items import Item
from phi_eval.contamination.normalize import make_units
from phi_eval.errors import UsageError

BATCH_BYTES = 4 << 20


def decontaminate(sources: list[str], items: list[Item], output: Path, manifest_path: Path, *, mode: str = "drop",
                  n: int = 13, unit: str = "word", tokenizer: str | None = None, text_field: str | None = None,
                  min_matches: int = 1, mask_with: str = "", progress: bool = True) -> dict:
    if mode not in ("drop", "mask"):
        raise UsageError(f"--mode {mode!r}: use drop (remove the document) or mask (blank the overlapping text)")
    if min_matches < 1:
        raise UsageError("--min-matches must be at least 1")
    units = make_units(unit, tokenizer)
    benchmark = units.grams([item.text for item in items], n)
    owners: dict[int, set[str]] = {}
    for h, i in zip(benchmark.hashes.tolist(), benchmark.docs.tolist()):
        owners.setdefault(h, set()).add(f"{items[i].task}:{items[i].doc_id}")
    dirty = np.unique(benchmark.hashes)

    touched, totals = [], {"documents_read": 0, "documents_written": 0, "documents_dropped": 0,
                           "documents_masked": 0, "characters_masked": 0}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as out, tqdm(desc="decontaminate", unit="doc",
                                                           disable=not progress) as bar:
        def process(batch):
            grams = units.grams([d.text for d in batch], n)
            where = np.minimum(np.searchsorted(dirty, grams.hashes), max(len(dirty) - 1, 0))
            hit = dirty[where] == grams.hashes if len(dirty) else np.zeros(len(grams.hashes), dtype=bool)
            bounds = np.searchsorted(grams.docs, np.arange(len(batch) + 1))  # grams come in document order
            for b, document in enumerate(batch):
                mine = slice(bounds[b], bounds[b + 1])
                positions = grams.positions[mine][hit[mine]]
                text = document.text
                if len(positions) >= min_matches:
                    shared = grams.hashes[mine][hit[mine]].tolist()
                    entry = {"document": document.name, "action": "dropped" if mode == "drop" else "masked",
                             "matched_ngrams": len(shared),
                             "items": sorted(set().union(*(owners[h] for h in shared)))}
                    if mode == "drop":
                        totals["documents_dropped"] += 1
                        touched.append(entry)
                        continue
                    text, spans = mask(text, positions, units, n, mask_with)
                    entry["spans"] = spans
                    totals["documents_masked"] += 1
                    totals["characters_masked"] += sum(e - s for s, e in spans)
                    touched.append(entry)
                record = {**document.record, document.field: text} if document.record is not None \
                    else {"source": document.name, "text": text}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                totals["documents_written"] += 1
            totals["documents_read"] += len(batch)
            bar.update(len(batch))

        batch, size = [], 0
        for document in iter_documents(sources, text_field):
            batch.append(document)
            size += len(document.text)
            if size >= BATCH_BYTES:
                process(batch)
                batch, size = [], 0
        if batch:
            process(batch)

    manifest = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sources": list(sources),
                "output": str(output), "mode": mode, "n": n, **units.describe(), "min_matches": min_matches,
                "mask_with": mask_with if mode == "mask" else None,
                "benchmark": sorted({item.task for item in items}), "benchmark_items": len(items),
                "benchmark_ngrams": int(len(dirty)), **totals, "touched": touched}
    Path(manifest_path).parent.mkdir(parents=True, exist_ok=True)
    Path(manifest_path).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def mask(text: str, positions: np.ndarray, units, n: int, mask_with: str) -> tuple[str, list[list[int]]]:
    """Replace the characters of the n-grams starting at `positions` (merged where they overlap)."""
    spans = units.unit_spans(text)
    ranges = sorted((spans[p][0], spans[p + n - 1][1]) for p in positions.tolist())
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, cursor = [], 0
    for start, end in merged:
        pieces += [text[cursor:start], mask_with]
        cursor = end
    return "".join(pieces) + text[cursor:], merged
