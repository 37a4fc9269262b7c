"""The leaderboard: results.json files of runs, set beside the zoo's reported numbers.

One row per measured (model, task, metric, filter), plus a "reported" row for each zoo card
with a published number on a measured task/metric that was not itself run, so the table
and plots show the field. The same rows render to JSON, Markdown and plots (plots.py).
"comparisons" holds, for every task and metric two or more runs measured, a paired test of each
pair of runs on the items both scored (significance.py), read from the runs' samples files.
"""
from __future__ import annotations

import itertools
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.report.plots import plot  # noqa: F401  (part of this module's API; matplotlib loads lazily)
from phi_eval.report.results import read_samples
from phi_eval.zoo import Card, ReportedScore, load_zoo

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


def build_leaderboard(run_dirs, zoo: dict[str, Card] | None = None) -> dict:
    zoo = load_zoo() if zoo is None else zoo
    runs, rows = [], []
    for path in results_files(run_dirs):
        results = read_results(path)
        card = card_for(results, zoo)
        model = results.get("model_name") or config_of(results).get("model") or path.parent.name
        runs.append({"results_file": str(path), "model": model, "model_card": card.name if card else None,
                     "tasks": sorted(results["results"])})
        rows += measured_rows(path, results, model, card)
    rows += reported_rows(rows, zoo)
    rows.sort(key=row_order)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "runs": runs,
        "comparisons": paired_comparisons(rows),
    }


def write_json(board: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------ reading runs

def results_files(run_dirs) -> list[Path]:
    """Each RUN_DIR is a model dir holding results.json, or an OUT dir of model dirs."""
    found: list[Path] = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise UsageError(f"run directory {run_dir} does not exist; pass the --out directory of `phi-eval run`")
        direct = run_dir / RESULTS_FILE
        paths = [direct] if direct.is_file() else sorted(run_dir.glob(f"*/{RESULTS_FILE}"))
        if not paths:
            raise UsageError(f"no {RESULTS_FILE} in {run_dir} or its subdirectories; "
                             "pass the --out directory of `phi-eval run`")
        found += [p.resolve() for p in paths if p.resolve() not in found]
    return found


def read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        detail = " ".join(str(e).split())
        raise UsageError(f"{path} is not valid JSON ({detail}); re-run `phi-eval run` for that model") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise UsageError(f'{path} has no "results" object; it is not a phi-eval or lm-eval results file')
    return results


def config_of(results: dict) -> dict:
    config = results.get("config")
    return config if isinstance(config, dict) else {}


def card_for(results: dict, zoo: dict[str, Card]) -> Card | None:
    """phi-eval records the card it ran; other lm-eval files are matched by name or hub id."""
    config = config_of(results)
    if "model_card" in config:
        return zoo.get(config["model_card"]) if isinstance(config["model_card"], str) else None
    name = results.get("model_name")
    return next((c for c in zoo.values() if name in (c.name, c.hub_id)), None) if name else None


def number(value) -> float | int | None:
    """A finite number, else None (lm-eval writes "N/A" for stderrs it could not compute)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------- rows

def measured_rows(path: Path, results: dict, model: str, card: Card | None) -> list[dict]:
    config = config_of(results)
    parameters = number(config.get("parameters")) or (card.parameters if card else None)
    contamination = results.get("contamination") if isinstance(results.get("contamination"), dict) else {}
    rows = []
    for task, metrics in results["results"].items():
        if not isinstance(metrics, dict):
            continue
        for key, raw in metrics.items():
            value = number(raw)
            if key == "alias" or "_stderr" in key or value is None:
                continue
            metric, _, filter_ = key.partition(",")
            stderr_key = f"{metric}_stderr{key[len(metric):]}"  # "pass@1,none" -> "pass@1_stderr,none"
            if stderr_key not in metrics:
                continue  # a score comes with its stderr; counts and p-values stay in results.json
            rows.append(make_row(
                "measured", model, card, task, metric, parameters,
                reported=card.reported_score(task, metric) if card else None,
                filter_=filter_ or None, value=value, stderr=number(metrics.get(stderr_key)),
                n=sample_count(results, task), n_total=total_count(results, task), limit=number(config.get("limit")),
                n_shot=shot_count(results, task),
                contamination=contamination.get(task), run_dir=str(path.parent),
            ))
    return rows


def reported_rows(measured: list[dict], zoo: dict[str, Card]) -> list[dict]:
    """Published numbers of cards that were not run, on the task/metrics that were."""
    pairs = {(r["task"], r["metric"]) for r in measured}
    ran = {(r["model_card"], r["task"]) for r in measured}
    return [
        make_row("reported", card.name, card, score.task, score.metric, card.parameters, reported=score)
        for card in zoo.values() for score in card.reported
        if (score.task, score.metric) in pairs and (card.name, score.task) not in ran
    ]


def make_row(kind: str, model: str, card: Card | None, task: str, metric: str, parameters: int | None, *,
             reported: ReportedScore | None = None, filter_=None, value=None, stderr=None, n=None, n_total=None,
             limit=None, n_shot=None, contamination=None, run_dir=None) -> dict:
    tokens = card.training_tokens if card else None
    return {
        "kind": kind,
        "model": model,
        "model_card": card.name if card else None,
        "task": task,
        "metric": metric,
        "filter": filter_,
        "value": value,
        "stderr": stderr,
        "n": n,
        "n_total": n_total,  # the task's items; more than n where --limit cut the run
        "limit": limit,  # the run's --limit, if one was given
        "n_shot": n_shot,
        "reported_value": reported.value if reported else None,
        "reported_n_shot": reported.n_shot if reported else None,
        "reported_source": reported.source if reported else None,
        "reported_verified": reported.verified if reported else None,
        "reported_note": reported.note if reported else None,
        "delta": round(value - reported.value, 6) if value is not None and reported else None,
        "parameters": parameters,
        "training_tokens": tokens,
        # The usual estimate of training FLOPs: 6 per parameter per token seen.
        "train_compute_flops": 6 * parameters * tokens if parameters and tokens else None,
        "contamination": contamination,
        "run_dir": run_dir,
    }


def sample_count(results: dict, task: str) -> int | None:
    counts = (results.get("n-samples") or {}).get(task)
    if not isinstance(counts, dict):
        return None
    effective = number(counts.get("effective"))
    return effective if effective is not None else number(counts.get("original"))


def total_count(results: dict, task: str) -> int | None:
    counts = (results.get("n-samples") or {}).get(task)
    return number(counts.get("original")) if isinstance(counts, dict) else None


def shot_count(results: dict, task: str) -> int | None:
    shots = (results.get("n-shot") or {}).get(task)
    return shots if isinstance(shots, int) and not isinstance(shots, bool) else None


def row_order(row: dict):
    score = row["value"] if row["kind"] == "measured" else row["reported_value"]
    return (row["task"], row["metric"], row["kind"] != "measured", row["filter"] or "", -(score or 0.0), row["model"])


# ------------------------------------------------------------------- paired comparisons

def paired_comparisons(rows: list[dict]) -> list[dict]:
    """Each pair of measured rows of one (task, metric, filter) whose runs left per-item samples, the
    better-scoring run first (rows come sorted by score)."""
    from phi_eval.report.significance import compare, per_item_values  # scipy.stats takes seconds to import

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "measured" and row["run_dir"]:
            groups.setdefault((row["task"], row["metric"], row["filter"]), []).append(row)
    records_of: dict[Path, list[dict] | None] = {}
    comparisons = []
    for (task, metric, filter_), members in groups.items():
        scored = []
        for row in members:
            path = Path(row["run_dir"]) / f"samples_{task}.jsonl"
            if path not in records_of:
                records_of[path] = read_samples(path) if path.is_file() else None
            values = per_item_values(records_of[path] or [], metric, filter_)
            if values:
                scored.append((row, values))
        for (row_a, values_a), (row_b, values_b) in itertools.combinations(scored, 2):
            result = compare(values_a, values_b)
            if result is not None:
                comparisons.append({"task": task, "metric": metric, "filter": filter_,
                                    "model_a": row_a["model"], "model_b": row_b["model"],
                                    "run_dir_a": row_a["run_dir"], "run_dir_b": row_b["run_dir"], **result})
    return comparisons


# --------------------------------------------------------------------------- Markdown

def to_markdown(board: dict) -> str:
    lines = ["# Leaderboard", "",
             f"Generated {board['generated_at']} from {len(board['runs'])} results file(s). "
             "Measured rows come first; reported numbers are the cited papers' own. "
             "Δ = measured − reported. n is the items scored (of the task's total, or the run's --limit, where one cut the run). "
             "Compute is 6·N·D (parameters × training tokens seen).", ""]
    for (task, metric, filter_), rows in group_rows(board["rows"]).items():
        heading = f"## {task} · {metric}" + (f" ({filter_})" if filter_ not in (None, "none") else "")
        show_contamination = any(r["contamination"] for r in rows)
        header = ["Model", "Measured", "n", "Shots", "Reported", "Δ", "Params", "Tokens", "Compute (FLOPs)", "Source"]
        if show_contamination:
            header.append("Contamination")
        lines += [heading, "", table_line(header), table_line(["---"] * len(header))]
        for row in rows:
            cells = [row["model"], fmt_measured(row) + (" †" if flagged(row) else ""), fmt_n(row),
                     fmt_shots(row), fmt_reported(row), fmt(row["delta"], "{:+.3f}".format),
                     fmt(row["parameters"], human),
                     fmt(row["training_tokens"], human), fmt(row["train_compute_flops"], "{:.2e}".format),
                     row["reported_source"] or "—"]
            if show_contamination:
                cells.append(fmt(row["contamination"], lambda flags: fmt_contamination(flags, row)))
            lines.append(table_line(cells))
        if any(flagged(r) for r in rows):
            lines += ["", "† Some of this task's items were flagged by the run's contamination report; "
                          "the Contamination column gives the score on the clean items."]
        lines += comparison_lines([c for c in board.get("comparisons", [])
                                   if (c["task"], c["metric"], c["filter"]) == (task, metric, filter_)])
        lines.append("")
    return "\n".join(lines)


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """A table of paired differences; n.s. marks those a paired test does not tell apart from chance."""
    if not comparisons:
        return []
    alpha, confidence = comparisons[0]["alpha"], comparisons[0]["confidence"]
    lines = ["", f"Paired differences on the items both runs scored (n.s.: not significant at α = {alpha:g}; "
                 "McNemar's exact test for 0/1 outcomes, else a paired bootstrap):", "",
             table_line(["A", "B", "A − B", f"{confidence:.0%} CI", "p", "Test", "Items", "Verdict"]),
             table_line(["---"] * 8)]
    for c in comparisons:
        unpaired = c["only_a"] + c["only_b"]
        lines.append(table_line([
            c["model_a"], c["model_b"], f"{c['difference']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
            f"{c['p_value']:.3g}", "McNemar" if c["test"] == "mcnemar_exact" else "bootstrap",
            str(c["n_paired"]) + (f" ({unpaired} unpaired left out)" if unpaired else ""),
            "significant" if c["significant"] else "n.s.",
        ]))
    return lines


def group_rows(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(task, metric, filter) -> rows; reported rows (no filter) join every filter of their metric."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "measured":
            groups.setdefault((row["task"], row["metric"], row["filter"]), []).append(row)
    for row in rows:
        if row["kind"] == "reported":
            for key, members in groups.items():
                if key[:2] == (row["task"], row["metric"]):
                    members.append(row)
    return groups


def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def fmt(value, formatter) -> str:
    return "—" if value is None else formatter(value)


def fmt_measured(row: dict) -> str:
    if row["value"] is None:
        return "—"
    return f"{row['value']:.3f}" + (f" ± {row['stderr']:.3f}" if row["stderr"] is not None else "")


def fmt_n(row: dict) -> str:
    n, total = row["n"], row.get("n_total")
    if n is not None and total is not None and total > n:
        return f"{n} of {total}"
    return fmt(n, str) + (f" (--limit {row['limit']})" if n is not None and row.get("limit") else "")


def fmt_reported(row: dict) -> str:
    if row["reported_value"] is None:
        return "—"
    return f"{row['reported_value']:.3f}" + ("" if row["reported_verified"] else " (unverified)")


def fmt_shots(row: dict) -> str:
    measured, reported = row["n_shot"], row["reported_n_shot"]
    if row["kind"] == "reported":
        return fmt(reported, str)
    if reported is not None and reported != measured:
        return f"{fmt(measured, str)} (paper: {reported})"
    return fmt(measured, str)


def flagged(row: dict) -> bool:
    flags = row["contamination"]
    return isinstance(flags, dict) and isinstance(flags.get("flagged"), int) and flags["flagged"] > 0


def fmt_contamination(flags, row: dict) -> str:
    if isinstance(flags, dict) and isinstance(flags.get("flagged"), int) and isinstance(flags.get("clean"), int):
        text = f"{flags['flagged']} flagged of {flags['flagged'] + flags['clean']}"
        # phi-eval's results carry the metrics of each subset (contamination.<task>.metrics.clean).
        metrics = flags.get("metrics") if isinstance(flags.get("metrics"), dict) else {}
        clean = (metrics.get("clean") or {}).get(f"{row['metric']},{row['filter']}")
        return text + (f"; clean {clean:.3f}" if number(clean) is not None else "")
    return json.dumps(flags, sort_keys=True)


def human(count: int) -> str:
    """1300000000 -> 1.3B: sizes and token counts as papers write them."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)
