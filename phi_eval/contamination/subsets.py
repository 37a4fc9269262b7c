"""Clean-subset scores: a run's metrics on the flagged and on the clean items of a report.

The layout is the phi-1 paper's Table 3 (HumanEval on "similar" vs "non-similar" problems at each
AST threshold tau): one split for "flagged by any method", and one per method and per tau.
"""
from __future__ import annotations

from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.metrics import pass_at_k_metrics


def splits(report: dict, task: str) -> dict[str, dict[str, bool]]:
    """split name -> {doc_id: flagged}: "any", each flagging method, and ast@tau for every tau."""
    records = report["tasks"][task]["items"]
    result = {"any": {r["doc_id"]: bool(r["flagged"]) for r in records}}
    for name in report["tasks"][task]["summary"]["by_method"]:
        method, _, tau = name.partition("@")
        if method == "ast":
            result[name] = {r["doc_id"]: bool(r["ast"]["similar_at"].get(tau)) for r in records}
        else:
            result[name] = {r["doc_id"]: bool(r[method]["flagged"]) for r in records}
    return result


def contamination_scores(report: dict, report_path: Path, task: str, records: list[dict]) -> dict | None:
    """results.json's contamination.<task>: counts and metrics of the flagged and clean items."""
    if task not in report["tasks"]:
        return None
    per_doc: dict[str, list[int]] = {}
    for record in records:  # one record per sample
        counts = per_doc.setdefault(record["doc_id"], [0, 0])
        counts[0] += 1
        counts[1] += bool(record["passed"])
    by_split = splits(report, task)
    missing = [doc for doc in per_doc if doc not in by_split["any"]]
    if missing:
        raise UsageError(f"contamination report {report_path} has no {task} item {missing[0]} (and "
                         f"{len(missing) - 1} more); rerun `phi-eval contamination` on the same tasks without --limit")
    subsets = {}
    for name, flags in by_split.items():
        flagged = [tuple(c) for doc, c in per_doc.items() if flags[doc]]
        clean = [tuple(c) for doc, c in per_doc.items() if not flags[doc]]
        subsets[name] = {"flagged": len(flagged), "clean": len(clean),
                         "metrics": {"flagged": pass_at_k_metrics(flagged), "clean": pass_at_k_metrics(clean)}}
    methods = report.get("methods", {})
    return {"report": str(Path(report_path).resolve()), "methods": sorted(methods),
            "thresholds": {name: {k: v for k, v in settings.items() if k in ("threshold", "tau", "taus", "n", "unit")}
                           for name, settings in methods.items()},
            **subsets.pop("any"), "subsets": subsets}


def table3(contamination: dict, metric: str = "pass@1,none") -> str:
    """Markdown: per task and split, the metric on the flagged items, the clean items and all of them."""
    name = metric.split(",")[0]
    lines = [f"| task | split | flagged items | clean items | {name} on flagged | {name} on clean |",
             "| --- | --- | --- | --- | --- | --- |"]
    for task, block in contamination.items():
        if not block:
            continue
        for name, split in {"any": block, **block["subsets"]}.items():
            scores = [split["metrics"][side].get(metric) for side in ("flagged", "clean")]
            lines.append(f"| {task} | {name} | {split['flagged']} | {split['clean']} | "
                         + " | ".join("—" if s is None else f"{s:.3f}" for s in scores) + " |")
    return "\n".join(lines)
