"""The contamination report: JSON (every item, every method, the thresholds used) and Markdown."""
from __future__ import annotations

import json
from pathlib import Path

from phi_eval.errors import UsageError


def write_report(report: dict, path: Path, markdown_path: Path | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    if markdown_path:
        Path(markdown_path).write_text(to_markdown(report), encoding="utf-8")


def load_report(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read contamination report {path} ({' '.join(str(e).split())}); "
                         "write one with `phi-eval contamination`") from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict):
        raise UsageError(f'{path} has no "tasks" object; it is not a report of `phi-eval contamination`')
    return report


def to_markdown(report: dict) -> str:
    corpus = report["corpus"]
    lines = ["# Contamination report", "",
             f"Created {report['created_at']}. Corpus: {', '.join(corpus['sources']) or corpus.get('index', '—')}"
             + (f" ({corpus['documents']:,} documents, {corpus['units']:,} units, {corpus['ngrams']:,} n-grams)"
                if "ngrams" in corpus else "") + ".", "", "## Methods", ""]
    for name, settings in report["methods"].items():
        shown = {k: v for k, v in settings.items() if k not in ("instructions",)}
        lines.append(f"- **{name}**: " + "; ".join(f"{k} = {v}" for k, v in shown.items()))
    for task, entry in report["tasks"].items():
        summary = entry["summary"]
        lines += ["", f"## {task}", "", f"Text checked per item: {entry['text']}. "
                  f"{summary['flagged']} of {summary['items']} items flagged by at least one method.", "",
                  "| flag | flagged | clean |", "| --- | --- | --- |"]
        lines += [f"| {name} | {count} | {summary['items'] - count} |" for name, count in summary["by_method"].items()]
        for key, label in (("min_k_auc", "Min-K%"), ("min_k_pp_auc", "Min-K%++")):
            if key in summary:
                lines.append(f"\n{label} AUC against the reference set: {summary[key]:.3f} (0.5 = indistinguishable)")
        flagged = [r for r in entry["items"] if r["flagged"]]
        if flagged:
            lines += ["", "| item | flagged by | n-gram fraction | longest span | AST rate | embedding distance | "
                      "closest document |", "| --- | --- | --- | --- | --- | --- | --- |"]
            lines += [item_row(r) for r in flagged]
    return "\n".join(lines) + "\n"


def item_row(record: dict) -> str:
    ngram, tree, embedding = record.get("ngram"), record.get("ast"), record.get("embedding")
    closest = ((ngram or {}).get("documents") or [{}])[0].get("document")
    if closest is None and tree and tree.get("match"):
        closest = f"{tree['match']['document']} lines {tree['match']['lines'][0]}-{tree['match']['lines'][1]}"
    cells = [record["doc_id"], ", ".join(record["flagged_by"]),
             fmt(ngram and ngram["fraction"]), str(ngram["longest_span"]) if ngram else "—",
             fmt(tree and tree["match_rate"]), fmt(embedding and embedding["distance"]), closest or "—"]
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"
