"""Leaderboard plots for the app: one task/metric's score against parameters, training tokens and training
compute, with the Pareto frontier (the best score reached at each size or cost) and contaminated results
marked. Filled points are measured here, hollow points are papers' numbers (as in phi_eval.report.plots)."""
from __future__ import annotations

from phi_eval.app.leaderboard_view import is_contaminated
from phi_eval.report.plots import MEASURED_COLOR, REPORTED_COLOR, panel_keys, spread_labels

AXES = (("parameters", "parameters"), ("training_tokens", "training tokens seen"),
        ("train_compute_flops", "training compute 6·N·D (FLOPs)"))
FRONTIER_COLOR, CONTAMINATED_COLOR = "tab:green", "tab:red"


def score(row: dict) -> float | None:
    return row["value"] if row["kind"] == "measured" else row["reported_value"]


def panels(rows: list[dict]) -> dict[str, tuple]:
    """Plot title -> (task, metric, filter), one per measured task/metric/filter, in leaderboard order."""
    return {f"{task} · {metric}" + (f" ({filter_})" if filter_ not in (None, "none") else ""): (task, metric, filter_)
            for task, metric, filter_ in panel_keys(rows)}


def panel_rows(rows: list[dict], key: tuple) -> list[dict]:
    """The measured rows of one panel, with the papers' numbers for its task and metric."""
    task, metric, filter_ = key
    return [r for r in rows if r["task"] == task and r["metric"] == metric
            and (r["kind"] == "reported" or r["filter"] == filter_)]


def pareto_frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats, i.e. none has a smaller-or-equal x and a higher-or-equal
    score with one of them strictly better; in order of x. Lower x (size, cost) and higher score are better."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            frontier.append(i)
            best = points[i][1]
    return frontier


def figure(rows: list[dict], title: str):
    """A three-panel figure of `rows` (one task and metric). Rows without a score or with an unknown x
    have no place on a panel's log axis and are left out of it."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    for ax, (field, label) in zip(fig.subplots(1, len(AXES)), AXES):
        placed = [row for row in rows if score(row) is not None and row[field]]
        _panel(ax, placed, field)
        ax.set_xlabel(label)
        ax.set_ylabel(title.split(" · ")[-1])
    fig.suptitle(title)
    fig.legend(handles=[
        Line2D([], [], ls="", marker="o", color=MEASURED_COLOR, label="measured"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", color=REPORTED_COLOR, label="reported (paper)"),
        Line2D([], [], ls="--", color=FRONTIER_COLOR, label="Pareto frontier"),
        Line2D([], [], ls="", marker="x", markersize=9, color=CONTAMINATED_COLOR, label="contaminated"),
    ], loc="outside lower center", ncols=4, fontsize=8)
    spread_labels(fig)
    return fig


def _panel(ax, rows: list[dict], field: str) -> None:
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)  # scores are fractions; room for the many 0.0 scores of small baselines
    if not rows:
        ax.text(0.5, 0.5, f"no model with a known {field.replace('_', ' ')}", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="gray")
        return
    points = [(row[field], score(row)) for row in rows]
    for row, (x, y) in zip(rows, points):
        if row["kind"] == "measured":
            ax.scatter([x], [y], color=MEASURED_COLOR, zorder=3)
        else:
            ax.scatter([x], [y], facecolors="none", edgecolors=REPORTED_COLOR, zorder=3)
        if is_contaminated(row):
            ax.scatter([x], [y], marker="x", s=90, color=CONTAMINATED_COLOR, zorder=4)
        ax.annotate(row["model"], (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    frontier = [points[i] for i in pareto_frontier(points)]
    # A step line: the best score reached at each size or cost, held to the panel's largest x.
    xs = [x for x, _ in frontier] + [max(x for x, _ in points)]
    ys = [y for _, y in frontier] + [frontier[-1][1]]
    ax.plot(xs, ys, ls="--", color=FRONTIER_COLOR, drawstyle="steps-post", zorder=2)
    ax.scatter(xs[:-1], ys[:-1], s=160, facecolors="none", edgecolors=FRONTIER_COLOR, zorder=2)
