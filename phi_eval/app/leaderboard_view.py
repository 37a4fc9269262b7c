"""The leaderboard view: the rows of one or more leaderboard JSON files (`phi-eval leaderboard -o`),
filtered and sorted for a table. The plots are in leaderboard_plots.py."""
from __future__ import annotations

import json
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.report.leaderboard import SCHEMA_VERSION, human

ANY = "all"
# Table header -> how a row shows in that column. Numbers stay numbers so the table sorts them as such.
COLUMNS = {
    "model": lambda r: r["model"],
    "kind": lambda r: r["kind"],
    "task": lambda r: r["task"],
    "metric": lambda r: r["metric"] + (f" ({r['filter']})" if r["filter"] not in (None, "none") else ""),
    "measured": lambda r: r["value"],
    "stderr": lambda r: r["stderr"],
    "reported": lambda r: r["reported_value"],
    "delta": lambda r: r["delta"],
    "n": lambda r: r["n"],
    "shots": lambda r: r["n_shot"] if r["kind"] == "measured" else r["reported_n_shot"],
    "parameters": lambda r: r["parameters"],
    "training tokens": lambda r: r["training_tokens"],
    # A float: FLOP counts pass 2**63, more than the page's JSON numbers hold as integers.
    "compute (FLOPs)": lambda r: None if r["train_compute_flops"] is None else float(r["train_compute_flops"]),
    "contaminated": lambda r: contamination_label(r),
    "source": lambda r: r["reported_source"],
}
# How the numeric columns read in the table (their values stay numbers, so sorting stays numeric).
DISPLAY = {
    "measured": "{:.3f}".format, "stderr": "{:.3f}".format, "reported": "{:.3f}".format, "delta": "{:+.3f}".format,
    "n": "{:.0f}".format, "shots": "{:.0f}".format, "parameters": lambda v: human(int(v)),
    "training tokens": lambda v: human(int(v)), "compute (FLOPs)": "{:.2e}".format,
}
ROW_FIELDS = ("kind", "model", "task", "metric", "filter", "value", "stderr", "reported_value", "delta", "parameters",
              "training_tokens", "train_compute_flops", "contamination")


def load_leaderboards(paths) -> list[dict]:
    """All rows of the given files; a row that several files hold (the zoo's reported rows) appears once."""
    if not paths:
        raise UsageError("no leaderboard file given: upload one or more leaderboard.json files "
                         "(made by `phi-eval leaderboard RUN_DIR -o leaderboard.json`)")
    rows, seen = [], set()
    for path in map(Path, paths):
        for row in _read(path):
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def _read(path: Path) -> list[dict]:
    fix = "give a file written by `phi-eval leaderboard ... -o leaderboard.json`"
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path.name} is not readable JSON ({' '.join(str(e).split())}); {fix}") from None
    if not isinstance(board, dict) or not isinstance(board.get("rows"), list):
        raise UsageError(f'{path.name} has no "rows" list, so it is not a leaderboard; {fix}')
    if board.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{path.name} has schema_version {board.get('schema_version')!r}; this app reads "
                         f"version {SCHEMA_VERSION}: rebuild it with this phi-eval's `phi-eval leaderboard`")
    for i, row in enumerate(board["rows"]):
        if not isinstance(row, dict) or any(f not in row for f in ROW_FIELDS):
            raise UsageError(f"{path.name}: row {i} lacks leaderboard fields (needs {', '.join(ROW_FIELDS)}); {fix}")
    return board["rows"]


def is_contaminated(row: dict) -> bool | None:
    """True when a contamination report flagged items of this task, False when it flagged none,
    None when no report was given."""
    flags = row["contamination"]
    if not isinstance(flags, dict):
        return None
    if isinstance(flags.get("contaminated"), bool):
        return flags["contaminated"]
    flagged = flags.get("flagged")
    return flagged > 0 if isinstance(flagged, (int, float)) and not isinstance(flagged, bool) else None


def contamination_label(row: dict) -> str:
    state = is_contaminated(row)
    if state is None:
        return ""
    flags = row["contamination"]
    counts = (f" ({flags['flagged']} of {flags['flagged'] + flags['clean']})"
              if isinstance(flags.get("flagged"), int) and isinstance(flags.get("clean"), int) else "")
    return ("yes" if state else "no") + counts


def choices(rows: list[dict], field: str) -> list[str]:
    return [ANY] + sorted({row[field] for row in rows})


def filter_rows(rows: list[dict], task: str = ANY, metric: str = ANY, kind: str = ANY, model: str = "",
                contamination: str = ANY) -> list[dict]:
    """`model` matches a part of the name, any case; `contamination` is all, clean or contaminated."""
    wanted = {"clean": False, "contaminated": True}.get(contamination)
    return [row for row in rows
            if task in (ANY, row["task"]) and metric in (ANY, row["metric"]) and kind in (ANY, row["kind"])
            and model.strip().lower() in row["model"].lower()
            and (wanted is None or is_contaminated(row) is wanted)]


def sort_rows(rows: list[dict], column: str, descending: bool = True) -> list[dict]:
    """Sort by a table column; rows with no value in it go last either way."""
    if column not in COLUMNS:
        raise UsageError(f"cannot sort by {column!r}; choose one of {', '.join(COLUMNS)}")
    cell = COLUMNS[column]
    known = [row for row in rows if cell(row) not in (None, "")]
    unknown = [row for row in rows if cell(row) in (None, "")]
    return sorted(known, key=cell, reverse=descending) + unknown


def table(rows: list[dict]) -> list[list]:
    return [[cell(row) for cell in COLUMNS.values()] for row in rows]
