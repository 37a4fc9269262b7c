"""`phi-eval contamination`: run the chosen methods over benchmark items and assemble the report.

Methods and what flags an item:
- ngram: the item's n-grams found in the corpus index; flagged when the fraction found exceeds
  `ngram_threshold` (default 0: any shared n-gram, the GPT-3 / phi-1 rule).
- embedding: the item's nearest corpus chunks; flagged when the nearest is within
  `embed_threshold` (L2 between normalised embeddings). phi-1 did not publish its threshold, so
  there is no default: without one the neighbours are reported and nothing is flagged.
- ast: the best AST match rate over corpus chunks; flagged at rate >= `tau` (default 0.95), and
  reported at every tau of `taus` (phi-1's 0.95, 0.9, 0.85, 0.8) for Table 3-style subsets.
- judge (with `judge`): an LLM says whether the top embedding / AST matches are the same problem.
- mink: Min-K% and Min-K%++ of the model, against a reference set; never flags (see membership.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from phi_eval import paths
from phi_eval.contamination import similarity
from phi_eval.contamination.corpus import check_sources, iter_documents, source_identity
from phi_eval.contamination.items import WHAT, Item
from phi_eval.contamination.ngram_index import NgramIndex, open_or_build, read_meta
from phi_eval.errors import UsageError

METHODS = ("ngram", "embedding", "ast", "mink")
SCHEMA_VERSION = 1
CHUNK_BATCH = 256


@dataclass
class CheckOptions:
    methods: tuple[str, ...] = ("ngram",)
    corpus: list[str] = field(default_factory=list)
    index: Path | None = None  # a built (e.g. merged) index to query instead of building one
    index_dir: Path | None = None  # where to build / find the index of `corpus`
    text_field: str | None = None
    n: int = 13
    unit: str = "word"
    tokenizer: str | None = None
    ngram_threshold: float = 0.0
    max_documents: int = 5
    embed_model: str | None = None
    embed_threshold: float | None = None
    top_k: int = 5
    window_lines: int = 30
    taus: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8)
    tau: float = 0.95
    mink_model: str | None = None
    mink_k: float = 0.2
    reference: list[str] = field(default_factory=list)
    judge: str | None = None
    judge_top: int = 1
    device: str = "auto"
    batch_size: int = 16
    max_tokens: int = 512
    workers: int = 1
    progress: bool = True


def validate(options: CheckOptions) -> None:
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown or not options.methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    needs_corpus = [m for m in options.methods if m in ("embedding", "ast")]
    if needs_corpus and not options.corpus:
        raise UsageError(f"--methods {','.join(needs_corpus)} read the corpus; pass --corpus SRC")
    if "ngram" in options.methods and not (options.corpus or options.index):
        raise UsageError("--methods ngram needs --corpus SRC (indexed on first use) or --index DIR")
    if options.corpus:
        check_sources(options.corpus)
    if options.index:
        read_meta(options.index)
    if "embedding" in options.methods and not options.embed_model:
        raise UsageError("--methods embedding needs --embed-model SPEC (phi-1 used CodeGen-350M-mono)")
    if "mink" in options.methods and not options.mink_model:
        raise UsageError("--methods mink needs --mink-model SPEC (the model being evaluated)")
    if options.judge and not needs_corpus:
        raise UsageError("--judge reviews embedding or AST matches; add embedding or ast to --methods")
    if options.n < 1 or options.top_k < 1 or options.max_documents < 1:
        raise UsageError("--n, --top-k and --max-documents must be at least 1")
    if not all(0 < t <= 1 for t in (*options.taus, options.tau)):
        raise UsageError("AST thresholds (tau) must be in (0, 1]")


def check(items: list[Item], options: CheckOptions) -> dict:
    validate(options)
    if not items:
        raise UsageError("no benchmark items to check; pass --tasks humaneval,mbpp")
    records = [{"doc_id": item.doc_id, "flagged": False, "flagged_by": []} for item in items]
    report = {"schema_version": SCHEMA_VERSION, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "corpus": {"sources": list(options.corpus)}, "methods": {}, "tasks": {}}

    if "ngram" in options.methods:
        index = ngram_index(options)
        report["corpus"].update(index=str(index.directory), **{k: index.meta[k] for k in
                                                               ("documents", "units", "ngrams", "text_bytes")})
        report["methods"]["ngram"] = {"n": index.n, **index.units.describe(), "threshold": options.ngram_threshold,
                                      "rule": "flagged when the fraction of the item's n-grams found > threshold",
                                      "max_documents": options.max_documents}
        found = index.query([item.text for item in items], max_documents=options.max_documents)
        for record, result in zip(records, found):
            result["flagged"] = result["fraction"] is not None and result["fraction"] > options.ngram_threshold
            record["ngram"] = result

    if "embedding" in options.methods or "ast" in options.methods:
        similarity_methods(items, records, report, options)

    if "mink" in options.methods:
        membership_method(items, records, report, options)

    for record in records:
        record["flagged_by"] = [name for name, flagged in method_flags(record, options.tau).items() if flagged]
        record["flagged"] = bool(record["flagged_by"])
    for task in dict.fromkeys(item.task for item in items):
        task_records = [r for r, item in zip(records, items) if item.task == task]
        report["tasks"][task] = {"text": WHAT[task], "items": task_records, "summary": summarize(task_records, options)}
    return report


def ngram_index(options: CheckOptions) -> NgramIndex:
    if options.index:
        return NgramIndex(options.index)
    return open_or_build(lambda: iter_documents(options.corpus, options.text_field), source_identity(options.corpus),
                         options.index_dir, n=options.n, unit=options.unit,
                         tokenizer=options.tokenizer, text_field=options.text_field,
                         default_root=paths.home() / "contamination", progress=options.progress)


def method_flags(record: dict, tau: float) -> dict[str, bool]:
    flags = {}
    if "ngram" in record:
        flags["ngram"] = record["ngram"]["flagged"]
    if "embedding" in record:
        flags["embedding"] = record["embedding"]["flagged"]
    if "ast" in record:
        flags[f"ast@{tau:g}"] = record["ast"]["flagged"]
    if "judge" in record:
        flags["judge"] = record["judge"]["flagged"]
    return flags


def summarize(records: list[dict], options: CheckOptions) -> dict:
    by_method: dict[str, int] = {}
    for record in records:
        for name, flagged in method_flags(record, options.tau).items():
            if not name.startswith("ast@"):  # counted at every tau just below
                by_method[name] = by_method.get(name, 0) + flagged
        for tau, similar in record.get("ast", {}).get("similar_at", {}).items():
            by_method[f"ast@{tau}"] = by_method.get(f"ast@{tau}", 0) + similar
    summary = {"items": len(records), "flagged": sum(r["flagged"] for r in records),
               "clean": sum(not r["flagged"] for r in records), "by_method": by_method}
    for key in ("min_k", "min_k_pp"):
        known = [r["mink"][f"{key}_percentile"] for r in records if r.get("mink", {}).get(f"{key}_percentile") is not None]
        if known:  # the mean percentile is this task's AUC against the reference set
            summary[f"{key}_auc"] = round(float(np.mean(known)), 6)
    return summary


# ----------------------------------------------------------------------- embedding and AST

def similarity_methods(items: list[Item], records: list[dict], report: dict, options: CheckOptions) -> None:
    """One pass over the corpus chunks feeds both the embedding neighbours and the AST matches."""
    use_embedding, use_ast = "embedding" in options.methods, "ast" in options.methods
    embedder = similarity.Embedder(options.embed_model, device=options.device, batch_size=options.batch_size,
                                   max_tokens=options.max_tokens) if use_embedding else None
    item_vectors = embedder.embed([item.text for item in items]) if embedder else None
    item_trees = [similarity.ast_tokens(item.code) for item in items] if use_ast else None
    nearest = similarity.NearestChunks(len(items), options.top_k)
    best_rate = np.zeros(len(items), dtype=np.float32)
    best_chunk: list = [None] * len(items)

    chunks = similarity.iter_chunks(iter_documents(options.corpus, options.text_field), options.window_lines)
    with tqdm(desc="chunks", unit="chunk", disable=not options.progress) as bar:
        for batch in similarity.batched(chunks, CHUNK_BATCH):
            if embedder:
                nearest.update(similarity.l2_distances(item_vectors, embedder.embed([c.text for c in batch])), batch)
            if use_ast:
                rates = similarity.ast_match_rates(item_trees, [similarity.ast_tokens(c.text) for c in batch],
                                                   workers=options.workers)
                column = rates.argmax(axis=1)
                rate = rates[np.arange(len(items)), column]
                for i in np.flatnonzero(rate > best_rate):
                    best_rate[i], best_chunk[i] = rate[i], batch[column[i]]
            bar.update(len(batch))

    if embedder:
        report["methods"]["embedding"] = {
            "model": options.embed_model, "pooling": "mean of the last hidden state, L2-normalised",
            "distance": "L2", "threshold": options.embed_threshold, "top_k": options.top_k,
            "max_tokens": embedder.max_tokens, "chunks": chunking(options),
            "rule": "flagged when the nearest chunk's distance <= threshold" if options.embed_threshold is not None
            else "no threshold given: neighbours reported, nothing flagged"}
        for record, neighbours in zip(records, nearest.results()):
            distance = neighbours[0][0] if neighbours else None
            record["embedding"] = {
                "distance": round(distance, 6) if distance is not None else None,
                "flagged": options.embed_threshold is not None and distance is not None
                and distance <= options.embed_threshold,
                "nearest": [chunk_ref(c, distance=round(d, 6)) for d, c in neighbours]}
    if use_ast:
        taus = sorted(set(options.taus) | {options.tau}, reverse=True)
        report["methods"]["ast"] = {"tau": options.tau, "taus": taus, "chunks": chunking(options),
                                    "rate": "1 - Levenshtein(pre-order AST tokens) / longer length; docstrings and "
                                            "imports dropped, defined names numbered",
                                    "rule": "flagged when the best match rate >= tau"}
        for record, item_tree, rate, chunk in zip(records, item_trees, best_rate.tolist(), best_chunk):
            record["ast"] = {"match_rate": round(rate, 6) if item_tree else None,
                             "flagged": bool(item_tree) and rate >= options.tau - 1e-9,
                             "similar_at": {f"{t:g}": bool(item_tree) and rate >= t - 1e-9 for t in taus},
                             "match": chunk_ref(chunk) if chunk else None}
    if options.judge:
        judge_method(items, records, report, options, nearest.results() if embedder else None, best_chunk)


def chunking(options: CheckOptions) -> str:
    return (f"Python documents: one chunk per top-level function or class method; others: "
            f"{options.window_lines}-line windows overlapping by half")


def chunk_ref(chunk: similarity.Chunk, **extra) -> dict:
    return {"document": chunk.document, "lines": [chunk.first_line, chunk.last_line], **extra}


def judge_method(items, records, report, options: CheckOptions, neighbours, best_chunk) -> None:
    from phi_eval.contamination.judge import INSTRUCTIONS, Judge

    judge = Judge(options.judge)
    report["methods"]["judge"] = {"model": options.judge, "instructions": INSTRUCTIONS,
                                  "candidates": f"the {options.judge_top} nearest embedding neighbour(s) and the "
                                                "best AST match of each item",
                                  "rule": "flagged when the judge answers yes for any candidate"}
    for i, (item, record) in enumerate(tqdm(list(zip(items, records)), desc="judge", unit="item",
                                            disable=not options.progress)):
        candidates = {}
        for _, chunk in (neighbours[i][:options.judge_top] if neighbours else []):
            candidates.setdefault(chunk.where(), ("embedding", chunk))
        if best_chunk[i] is not None:
            candidates.setdefault(best_chunk[i].where(), ("ast", best_chunk[i]))
        verdicts = [{"method": method, **chunk_ref(chunk), **judge.verdict(item.text, chunk.text)}
                    for method, chunk in candidates.values()]
        record["judge"] = {"flagged": any(v["same"] for v in verdicts), "candidates": verdicts}


# ------------------------------------------------------------------------------ Min-K%

def membership_method(items: list[Item], records: list[dict], report: dict, options: CheckOptions) -> None:
    from phi_eval.contamination.membership import membership

    reference = [d.text for d in iter_documents(options.reference, options.text_field)] if options.reference else None
    scores, summary = membership(options.mink_model, [item.text for item in items], reference, k=options.mink_k,
                                 device=options.device, batch_size=options.batch_size,
                                 max_tokens=options.max_tokens, progress=options.progress)
    report["methods"]["mink"] = {**summary, "reference": list(options.reference) or None,
                                 "rule": "never flags: scores and percentiles among the reference set's scores"}
    for record, score in zip(records, scores):
        record["mink"] = score
