"""The `filter` stage: keep the top `keep_fraction` of the documents by a score (phi-1 kept roughly 20%).

The score is `score_field` (default `quality_score`, written by `classify`; `edu_score` filters
on the annotator's grades directly). Documents without a numeric score are dropped and counted.
Ties at the threshold are broken by corpus order, so the result is deterministic. Kept documents
stay in corpus order. The manifest reports counts, kept bytes, the score threshold (the lowest
kept score) and examples from the top, the threshold and the best of the dropped.
"""
from __future__ import annotations

import math
from pathlib import Path

from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage
from phi_eval.errors import UsageError

FIELDS = {
    "keep_fraction": Field("fraction", 0.2, help="fraction of the scored documents kept (phi-1: about 0.2)"),
    "score_field": Field("str", "quality_score", help="document field to rank by (quality_score or edu_score)"),
    "min_score": Field("number", help="also drop documents scoring below this"),
}
EXAMPLES = 3


def example(document: dict, score: float) -> dict:
    return {"id": str(document.get("id", "")), "score": score, "start": document["text"][:200]}


def run_filter(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    field = settings["score_field"]

    def body(run: StageRun) -> dict:
        scored, unscored, total_bytes = [], 0, 0
        for i, document in enumerate(read_documents(input_path)):
            score = document.get(field)
            total_bytes += len(document["text"].encode("utf-8"))
            if isinstance(score, (int, float)) and not isinstance(score, bool) and not math.isnan(score):
                scored.append((-score, i))
            else:
                unscored += 1
        if not scored:
            raise UsageError(f"no document in {input_path} has a numeric {field!r}; run classify (or annotate) "
                             "first, or set score_field")
        ranked = sorted(scored)
        keep = ranked[:math.ceil(settings["keep_fraction"] * len(ranked))]
        if settings["min_score"] is not None:
            keep = [(s, i) for s, i in keep if -s >= settings["min_score"]]
        kept = {i for _, i in keep}
        dropped_scored = ranked[len(keep):]
        wanted = {i for _, i in keep[:EXAMPLES] + keep[-EXAMPLES:] + dropped_scored[:EXAMPLES]}
        examples, kept_bytes = {}, 0

        def kept_documents():
            nonlocal kept_bytes
            for i, document in enumerate(read_documents(input_path)):
                if i in wanted:
                    examples[i] = document
                if i in kept:
                    kept_bytes += len(document["text"].encode("utf-8"))
                    yield document

        run.write(kept_documents())
        return {
            "counts": {"read": len(scored) + unscored, "scored": len(scored), "unscored": unscored,
                       "kept": len(keep), "dropped": len(scored) + unscored - len(keep)},
            "kept_fraction_of_scored": round(len(keep) / len(scored), 6),
            "kept_fraction_of_bytes": round(kept_bytes / total_bytes, 6) if total_bytes else None,
            "threshold": -keep[-1][0] if keep else None,
            "examples": {"top": [example(examples[i], -s) for s, i in keep[:EXAMPLES]],
                         "at_threshold": [example(examples[i], -s) for s, i in keep[-EXAMPLES:]],
                         "best_dropped": [example(examples[i], -s) for s, i in dropped_scored[:EXAMPLES]]},
        }

    return run_stage("filter", FIELDS, settings, [jsonl_input(input_path)], output, body, show_progress=show_progress)
