"""The `dedup` stage: drop exact and near-duplicate documents, keeping the first of each group.

- exact: the SHA-256 of the text with every run of whitespace collapsed to one space and the
  ends stripped, so re-indented or re-wrapped copies count as the same text.
- near: MinHash (datasketch) over shingles of `shingle_size` consecutive tokens (words and
  single punctuation marks, lower-cased), with LSH to find candidates; a document whose
  estimated Jaccard similarity to an earlier kept one is at least `threshold` is dropped.
  Tokenising before shingling makes `a=b` and `a = b` the same, so reformatted code is caught.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage

FIELDS = {
    "exact": Field("bool", True, help="drop documents equal after whitespace normalisation"),
    "near": Field("bool", True, help="drop near duplicates (MinHash LSH)"),
    "threshold": Field("fraction", 0.8, help="estimated Jaccard similarity that makes a near duplicate"),
    "num_perm": Field("int", 128, minimum=16, help="MinHash permutations"),
    "shingle_size": Field("int", 5, minimum=1, help="tokens per shingle"),
}
TOKEN = re.compile(r"\w+|[^\w\s]")
EXAMPLES = 10


def normalised_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    tokens = TOKEN.findall(text.lower())
    if len(tokens) <= size:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i:i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def minhash_of(text: str, settings: dict):
    from datasketch import MinHash

    minhash = MinHash(num_perm=settings["num_perm"])
    minhash.update_batch(list(shingles(text, settings["shingle_size"])))
    return minhash


class Deduplicator:
    """Feed documents in order; `keep(document)` says whether it is new and records why not."""

    def __init__(self, settings: dict):
        from datasketch import MinHashLSH

        self.settings = settings
        self.hashes: dict[str, str] = {}
        self.lsh = MinHashLSH(threshold=settings["threshold"], num_perm=settings["num_perm"])
        self.minhashes: dict[str, object] = {}
        self.counts = {"read": 0, "kept": 0, "exact_duplicates": 0, "near_duplicates": 0}
        self.examples: list[dict] = []

    def keep(self, document: dict, minhash=None, digest: str | None = None) -> bool:
        """`minhash`, `digest`: the text's `minhash_of` and `normalised_hash`, when computed elsewhere."""
        self.counts["read"] += 1
        key = f"{self.counts['read'] - 1}:{document.get('id', '')}"
        text = document["text"]
        if self.settings["exact"]:
            digest = digest or normalised_hash(text)
            if digest in self.hashes:
                return self._drop("exact_duplicates", document, self.hashes[digest], 1.0)
        if self.settings["near"]:
            minhash = minhash if minhash is not None else minhash_of(text, self.settings)
            best = max(((self.minhashes[c].jaccard(minhash), c) for c in self.lsh.query(minhash)), default=None)
            if best is not None and best[0] >= self.settings["threshold"]:
                return self._drop("near_duplicates", document, best[1].split(":", 1)[1], best[0])
            self.lsh.insert(key, minhash)
            self.minhashes[key] = minhash
        if self.settings["exact"]:
            self.hashes[digest] = str(document.get("id", ""))
        self.counts["kept"] += 1
        return True

    def _drop(self, kind: str, document: dict, kept_id: str, similarity: float) -> bool:
        self.counts[kind] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"dropped": str(document.get("id", "")), "duplicate_of": kept_id, "kind": kind,
                                  "similarity": round(similarity, 3)})
        return False

    def report(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples}


def deduplicate(documents: Iterable[dict], settings: dict, show_progress: bool = False) -> tuple[list[dict], dict]:
    dedup = Deduplicator(settings)
    kept = [d for d in tqdm(documents, desc="dedup", unit="doc", disable=not show_progress) if dedup.keep(d)]
    return kept, dedup.report()


def run_dedup(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    def body(run: StageRun) -> dict:
        dedup = Deduplicator(settings)
        documents = tqdm(read_documents(input_path), desc="dedup", unit="doc", disable=not run.show_progress)
        run.write(d for d in documents if dedup.keep(d))
        return dedup.report()

    return run_stage("dedup", FIELDS, settings, [jsonl_input(input_path)], output, body, show_progress=show_progress)
