"""An n-gram index of a training corpus: sorted hashed n-grams, on disk, built in shards that merge.

Every corpus n-gram is one 16-byte entry: its 64-bit hash, its document (uint32) and its start
unit in that document (uint32), in three flat files sorted by hash. A query hashes a benchmark
item's n-grams the same way and binary-searches them (np.searchsorted on memory-mapped files:
only the pages a search touches are read). Document and position make the answers exact: which
documents share n-grams with an item, and the longest span the item shares with one document
(consecutive item n-grams found at consecutive positions of the same document).

Building streams: documents are cut into chunks of about `chunk_bytes` of text; each chunk's
n-grams are sorted in memory and written as a sorted run; the runs are merged into the index by a
k-way merge that reads each run in blocks. Memory is bounded by the chunk and the merge budget,
not by the corpus. Indexes built from disjoint parts of a corpus (`--shard I/N`, or different
files on different machines) merge the same way, with their document ids offset.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from phi_eval.contamination.corpus import Document
from phi_eval.contamination.normalize import make_units
from phi_eval.errors import UsageError

FORMAT = 1
META = "meta.json"
NAMES = "documents.jsonl"
ARRAYS = {"hashes": np.uint64, "docs": np.uint32, "positions": np.uint32}
CHUNK_BYTES = 4 << 20
MERGE_BUDGET_BYTES = 128 << 20


def array_file(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.bin"


def settings_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise UsageError(f"{directory} is not an n-gram index (no {META}); build one with `phi-eval index build`")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise UsageError(f"{directory} has index format {meta.get('format')}, this phi-eval reads {FORMAT}; rebuild it")
    return meta


# ---------------------------------------------------------------------------------- building

def build_index(documents: Iterable[Document], directory: Path, *, n: int, unit: str, tokenizer: str | None,
                identity: dict, chunk_bytes: int = CHUNK_BYTES, progress: bool = True) -> Path:
    """Index `documents` into `directory`; meta.json is written last, so its presence means complete."""
    directory = Path(directory)
    if (directory / META).exists():
        raise UsageError(f"{directory} already holds an index; pass another directory or remove it")
    units = make_units(unit, tokenizer)
    runs_dir = directory / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # leftovers of an interrupted build
    runs_dir.mkdir(parents=True)
    started = time.time()
    runs: list[tuple[Path, int, int]] = []
    totals = {"documents": 0, "units": 0, "text_bytes": 0}

    with open(directory / NAMES, "w", encoding="utf-8") as names, \
            tqdm(desc="index", unit="doc", disable=not progress) as bar:
        def flush(batch: list[Document]) -> None:
            grams = units.grams([d.text for d in batch], n)
            order = np.argsort(grams.hashes)
            if totals["documents"] + len(batch) >= 2**32 or (len(grams.units) and grams.units.max() >= 2**32):
                raise UsageError("corpus too large for one index shard (2**32 documents or units); use --shard")
            run = runs_dir / f"{len(runs):06d}"
            run.mkdir()
            grams.hashes[order].tofile(array_file(run, "hashes"))
            (grams.docs[order] + totals["documents"]).astype(np.uint32).tofile(array_file(run, "docs"))
            grams.positions[order].astype(np.uint32).tofile(array_file(run, "positions"))
            runs.append((run, len(order), 0))
            for document, count in zip(batch, grams.units.tolist()):
                names.write(json.dumps({"name": document.name, "units": count}, ensure_ascii=False) + "\n")
            totals["documents"] += len(batch)
            totals["units"] += int(grams.units.sum())
            bar.set_postfix(units=f"{totals['units']:.3g}", refresh=False)

        batch, size = [], 0
        for document in documents:
            batch.append(document)
            size += len(document.text)
            totals["text_bytes"] += len(document.text.encode("utf-8", errors="replace"))
            bar.update()
            if size >= chunk_bytes:
                flush(batch)
                batch, size = [], 0
        if batch:
            flush(batch)

    ngrams = merge_runs(runs, directory, progress=progress)
    shutil.rmtree(runs_dir)
    meta = {"format": FORMAT, **units.describe(), "n": n, "key": settings_key(identity), "identity": identity,
            **totals, "ngrams": ngrams, "bytes_per_unit": round(16 * ngrams / max(totals["units"], 1), 3),
            "build_seconds": round(time.time() - started, 3), "shards": 1}
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_block(directory: Path, name: str, start: int, count: int) -> np.ndarray:
    dtype = np.dtype(ARRAYS[name])
    return np.fromfile(array_file(directory, name), dtype=dtype, count=count, offset=start * dtype.itemsize)


def merge_runs(runs: list[tuple[Path, int, int]], out_dir: Path, *, budget_bytes: int = MERGE_BUDGET_BYTES,
               progress: bool = True) -> int:
    """k-way merge of sorted runs (directory, entries, document-id offset) into out_dir's arrays.

    Each round reads the next block of every run, takes from each all entries up to the smallest
    last hash among blocks that do not end their run (everything after it in any run is larger),
    sorts what it took and appends it. Memory: about budget_bytes, whatever the runs' sizes."""
    lengths = [length for _, length, _ in runs]
    block = max(1 << 15, budget_bytes // (2 * 16 * max(len(runs), 1)))  # x2: the blocks and their merged copy
    cursors = [0] * len(runs)
    outputs = {name: open(array_file(out_dir, name), "wb") for name in ARRAYS}
    try:
        with tqdm(total=sum(lengths), desc="merge", unit="gram", unit_scale=True, disable=not progress) as bar:
            while True:
                active = [i for i in range(len(runs)) if cursors[i] < lengths[i]]
                if not active:
                    break
                blocks = {i: read_block(runs[i][0], "hashes", cursors[i], block) for i in active}
                open_ends = [blocks[i][-1] for i in active if cursors[i] + len(blocks[i]) < lengths[i]]
                bound = min(open_ends) if open_ends else None
                parts = []
                for i in active:
                    take = len(blocks[i]) if bound is None else int(np.searchsorted(blocks[i], bound, side="right"))
                    if take:
                        directory, _, offset = runs[i]
                        docs = read_block(directory, "docs", cursors[i], take)
                        if offset:
                            docs = (docs.astype(np.int64) + offset).astype(np.uint32)
                        parts.append((blocks[i][:take], docs, read_block(directory, "positions", cursors[i], take)))
                        cursors[i] += take
                merged = [np.concatenate(arrays) for arrays in zip(*parts)]
                order = np.argsort(merged[0], kind="stable")
                for name, array in zip(ARRAYS, merged):
                    array[order].tofile(outputs[name])
                bar.update(len(order))
    finally:
        for f in outputs.values():
            f.close()
    return sum(lengths)


def merge_indexes(shard_dirs: list[Path], out_dir: Path, *, progress: bool = True) -> Path:
    """One index from shards built with the same settings; documents keep shard order."""
    out_dir = Path(out_dir)
    if (out_dir / META).exists():
        raise UsageError(f"{out_dir} already holds an index; pass another directory or remove it")
    metas = [read_meta(d) for d in shard_dirs]
    settings = {key: metas[0].get(key) for key in ("n", "unit", "tokenizer")}
    for directory, meta in zip(shard_dirs, metas):
        if {key: meta.get(key) for key in settings} != settings:
            raise UsageError(f"{directory} was built with other settings than {shard_dirs[0]} "
                             f"({settings}); shards must share n, unit and tokenizer")
    if sum(m["documents"] for m in metas) >= 2**32:
        raise UsageError("the shards hold 2**32 documents or more together; merge fewer of them")
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [m["documents"] for m in metas[:-1]]).tolist()
    with open(out_dir / NAMES, "wb") as names:
        for directory in shard_dirs:
            with open(Path(directory) / NAMES, "rb") as part:
                shutil.copyfileobj(part, names)
    ngrams = merge_runs([(Path(d), m["ngrams"], o) for d, m, o in zip(shard_dirs, metas, offsets)], out_dir,
                        progress=progress)
    totals = {key: sum(m[key] for m in metas) for key in ("documents", "units", "text_bytes")}
    identity = {"merged": [m["identity"] for m in metas]}
    meta = {"format": FORMAT, **{k: v for k, v in metas[0].items() if k in ("unit", "tokenizer", "normalisation")},
            "n": settings["n"], "key": settings_key(identity), "identity": identity, **totals, "ngrams": ngrams,
            "bytes_per_unit": round(16 * ngrams / max(totals["units"], 1), 3),
            "build_seconds": round(time.time() - started, 3), "shards": sum(m["shards"] for m in metas)}
    (out_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


# ----------------------------------------------------------------------------------- queries

class NgramIndex:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        self.n = self.meta["n"]
        self.units = make_units(self.meta["unit"], self.meta.get("tokenizer"))
        self.arrays = {name: self._map(name, dtype) for name, dtype in ARRAYS.items()}
        self._names: list[str] | None = None

    def _map(self, name: str, dtype) -> np.ndarray:
        if not self.meta["ngrams"]:
            return np.zeros(0, dtype=dtype)
        return np.memmap(array_file(self.directory, name), dtype=dtype, mode="r")

    @property
    def names(self) -> list[str]:
        if self._names is None:
            with open(self.directory / NAMES, encoding="utf-8") as f:
                self._names = [json.loads(line)["name"] for line in f]
        return self._names

    def query(self, texts: list[str], *, max_documents: int = 5, max_occurrences: int = 10_000) -> list[dict]:
        """Per text: n-grams, how many occur in the corpus, the longest span shared with one document
        (in units), and the documents with most shared n-grams. An n-gram occurring more than
        max_occurrences times is still counted as found, but only that many occurrences are
        read for documents and spans ("truncated": true)."""
        grams = self.units.grams(texts, self.n)
        unique, inverse = np.unique(grams.hashes, return_inverse=True)
        hashes = self.arrays["hashes"]
        low = np.searchsorted(hashes, unique, side="left")
        high = np.searchsorted(hashes, unique, side="right")
        bounds = np.searchsorted(grams.docs, np.arange(len(texts) + 1))
        results = []
        for t, text in enumerate(texts):
            q = inverse[bounds[t]:bounds[t + 1]]
            found = high[q] > low[q]
            total, matched = len(q), int(found.sum())
            result = {"ngrams": total, "matched": matched, "fraction": round(matched / total, 6) if total else None,
                      "longest_span": 0, "longest_span_text": None, "n_documents": 0, "documents": [],
                      "truncated": False}
            if matched:
                positions = grams.positions[bounds[t]:bounds[t + 1]][found]
                result.update(self._occurrences(text, low[q[found]], high[q[found]], positions, max_documents,
                                                max_occurrences))
            results.append(result)
        return results

    def _occurrences(self, text: str, low, high, item_positions, max_documents: int, max_occurrences: int) -> dict:
        counts = np.minimum(high - low, max_occurrences)
        total = int(counts.sum())
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        entries = np.repeat(low, counts) + within
        docs = self.arrays["docs"][entries].astype(np.int64)
        diagonal = self.arrays["positions"][entries].astype(np.int64) - np.repeat(item_positions, counts)
        item = np.repeat(item_positions, counts)

        # Runs: consecutive item n-grams at consecutive positions of one document (same diagonal).
        order = np.lexsort((item, diagonal, docs))
        docs, diagonal, item = docs[order], diagonal[order], item[order]
        starts = np.ones(total, dtype=bool)
        starts[1:] = (docs[1:] != docs[:-1]) | (diagonal[1:] != diagonal[:-1]) | (item[1:] != item[:-1] + 1)
        run_length = np.bincount(np.cumsum(starts) - 1)
        run_doc, run_item = docs[starts], item[starts]

        doc_ids, doc_of_run = np.unique(run_doc, return_inverse=True)
        longest = np.zeros(len(doc_ids), dtype=np.int64)
        np.maximum.at(longest, doc_of_run, run_length)
        # The same item n-gram found twice in one document counts once for that document.
        pairs = np.unique(docs * (int(item.max()) + 1) + item)
        per_doc = np.bincount(np.searchsorted(doc_ids, pairs // (int(item.max()) + 1)), minlength=len(doc_ids))

        best = int(run_length.max())
        best_start = int(run_item[run_length == best].min())
        names = self.names
        ranked = sorted(zip(per_doc.tolist(), longest.tolist(), doc_ids.tolist()),
                        key=lambda r: (-r[0], -r[1], names[r[2]]))
        return {
            "longest_span": best + self.n - 1,
            "longest_span_text": self.units.span_text(text, best_start, best_start + best + self.n - 1),
            "n_documents": len(doc_ids),
            "documents": [{"document": names[d], "matched": m, "longest_span": span + self.n - 1}
                          for m, span, d in ranked[:max_documents]],
            "truncated": bool((high - low > max_occurrences).any()),
        }


def open_or_build(documents_factory, sources_identity: list, index_dir: Path | None, *, n: int, unit: str,
                  tokenizer: str | None, text_field: str | None, default_root: Path, progress: bool = True
                  ) -> NgramIndex:
    """Reuse the index of these sources and settings if one was built, else build it (then reuse it)."""
    identity = {"sources": sources_identity, "n": n, "unit": unit, "tokenizer": tokenizer, "text_field": text_field}
    key = settings_key(identity)
    directory = Path(index_dir) if index_dir else default_root / f"index-{key}"
    if (directory / META).exists():
        if read_meta(directory).get("key") != key:
            raise UsageError(f"{directory} holds an index of other sources or settings; pass another "
                             "--index-dir or remove that one")
        if progress:
            print(f"phi-eval: reusing the n-gram index in {directory}")
        return NgramIndex(directory)
    build_index(documents_factory(), directory, n=n, unit=unit, tokenizer=tokenizer, identity=identity,
                progress=progress)
    return NgramIndex(directory)
