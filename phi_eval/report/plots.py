"""Leaderboard plots: score against model size and against training compute.

One column per measured task/metric. The top row puts parameters on the x axis, the
bottom row training compute 6·N·D, the axis on which "rivals models trained with 1000x
more compute" shows. Filled points are measured here, hollow points are papers' numbers.
"""
from __future__ import annotations

from pathlib import Path

from phi_eval.errors import UsageError

MAX_COLUMNS = 6  # beyond this the panels get too narrow to read; the Markdown has every task
AXES = (("parameters", "parameters"), ("train_compute_flops", "training compute 6·N·D (FLOPs)"))
MEASURED_COLOR, REPORTED_COLOR = "tab:blue", "tab:orange"
DPI = 120
# Where a point's label may go, in points from the point, tried in order: right, then further up or down
# the right side, then the left side (x = None: the label's right edge just left of the point).
LABEL_OFFSETS = [(4, 3)] + [(x, 3 + sign * step) for x in (4, None) for step in range(9, 64, 9)
                            for sign in (-1, 1)] + [(None, 3)]


def plot(board: dict, path) -> None:
    """Write a PNG of the leaderboard's measured tasks (MAX_COLUMNS of them, chosen by shown_panels)."""
    fig = figure(board)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def figure(board: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from matplotlib.lines import Line2D

    panels = panel_keys(board["rows"])
    if not panels:
        raise UsageError("the leaderboard has no measured scores to plot; check the run directories given")
    shown = shown_panels(board["rows"], panels)
    fig = Figure(figsize=(4.2 * len(shown), 7.5), layout="constrained", dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(shown), squeeze=False)
    for col, (task, metric, filter_) in enumerate(shown):
        rows = [r for r in board["rows"] if r["task"] == task and r["metric"] == metric
                and (r["kind"] == "reported" or r["filter"] == filter_)]
        for ax, (x_field, x_label) in zip(axes[:, col], AXES):
            draw_panel(ax, rows, x_field)
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
        axes[0, col].set_title(f"{task} · {metric}" + (f" ({filter_})" if filter_ not in (None, "none") else ""))
    axes[0, 0].legend(handles=[
        Line2D([], [], ls="", marker="o", color=MEASURED_COLOR, label="measured"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", color=REPORTED_COLOR, label="reported (paper)"),
    ], loc="upper left", fontsize=8)
    if len(panels) > len(shown):
        fig.suptitle(f"{len(shown)} of {len(panels)} task/metric columns (one per task, papers' numbers first); "
                     "the Markdown table has them all")
    spread_labels(fig)
    return fig


def panel_keys(rows: list[dict]) -> list[tuple]:
    """(task, metric, filter) of the measured rows, in leaderboard order, without repeats."""
    keys = [(r["task"], r["metric"], r["filter"]) for r in rows if r["kind"] == "measured"]
    return list(dict.fromkeys(keys))


def shown_panels(rows: list[dict], panels: list[tuple]) -> list[tuple]:
    """At most MAX_COLUMNS panels: the first metric of each task that papers report (where measured and
    reported meet), then the first of each other task, then second metrics, each group in leaderboard order."""
    reported = {(r["task"], r["metric"]) for r in rows if r["kind"] == "reported"}
    first_of_task = {}
    for panel in panels:
        first_of_task.setdefault(panel[0], panel)

    def rank(panel: tuple) -> int:
        if first_of_task[panel[0]] != panel:
            return 2
        return 0 if panel[:2] in reported else 1

    return sorted(panels, key=rank)[:MAX_COLUMNS]  # sorted() is stable: leaderboard order within a rank


def draw_panel(ax, rows: list[dict], x_field: str) -> None:
    placed = 0
    for row in rows:
        x = row[x_field]
        if not x:  # unknown size or compute has no place on a log axis
            continue
        measured, reported = row["value"], row["reported_value"]
        if measured is not None:
            ax.scatter([x], [measured], color=MEASURED_COLOR, zorder=3)
            if reported is not None:  # tie a measured point to its paper's number
                ax.plot([x, x], [measured, reported], ls=":", color="gray", zorder=1)
        if reported is not None:
            ax.scatter([x], [reported], facecolors="none", edgecolors=REPORTED_COLOR, zorder=2)
        label = ax.annotate(row["model"], (x, measured if measured is not None else reported),
                            xytext=LABEL_OFFSETS[0], textcoords="offset points", fontsize=7)
        label.set_in_layout(False)  # placed after the layout settles; must not move it
        placed += 1
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)  # room for the many 0.0 scores of small baselines
    if not placed:
        ax.text(0.5, 0.5, f"no model with a known {x_field}", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="gray")


def spread_labels(fig) -> None:
    """Move the point labels of every panel apart so that none covers another (leaderboard plots here and in
    the app). Run once the figure is complete: it lays the figure out to measure the labels."""
    renderer = laid_out(fig)
    for ax in fig.axes:
        place_labels(ax, renderer)


def laid_out(fig):
    """Draw the figure (running its constrained layout) on an Agg canvas; returns the renderer, which measures
    texts where they will be drawn (labels are placed in display space, where overlaps show)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def place_labels(ax, renderer) -> None:
    """Move each point label to the first offset where it overlaps no label placed before it and stays inside
    the figure (the one with least overlap where none is free): simple greedy repulsion, lowest points first.
    Area outside the figure counts as overlap, so labels at the right edge turn left rather than be cut off."""
    labels = sorted((t for t in ax.texts if t.get_text() and hasattr(t, "xyann")), key=lambda t: t.xy[::-1])
    placed = []
    for label in labels:
        width = label.get_window_extent(renderer).width * 72 / ax.figure.dpi
        best, best_overlap = None, None
        for dx, dy in LABEL_OFFSETS:
            label.xyann = (-width - 4 if dx is None else dx, dy)
            box = label.get_window_extent(renderer)
            outside = box.width * box.height - overlap_area(box, ax.figure.bbox)
            overlap = outside + sum(overlap_area(box, other) for other in placed)
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = label.xyann, overlap
            if not overlap:
                break
        label.xyann = best
        placed.append(label.get_window_extent(renderer))


def overlap_area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0
