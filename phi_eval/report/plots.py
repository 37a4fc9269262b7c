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


def plot(board: dict, path) -> None:
    """Write a PNG of the leaderboard's measured tasks (the first MAX_COLUMNS of them)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from matplotlib.lines import Line2D

    panels = panel_keys(board["rows"])
    if not panels:
        raise UsageError("the leaderboard has no measured scores to plot; check the run directories given")
    shown = panels[:MAX_COLUMNS]
    fig = Figure(figsize=(4.2 * len(shown), 7.5), layout="constrained")
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
        fig.suptitle(f"First {len(shown)} of {len(panels)} task/metric columns; the Markdown table has them all")
    spread_labels(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def panel_keys(rows: list[dict]) -> list[tuple]:
    """(task, metric, filter) of the measured rows, in leaderboard order, without repeats."""
    keys = [(r["task"], r["metric"], r["filter"]) for r in rows if r["kind"] == "measured"]
    return list(dict.fromkeys(keys))


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
        ax.annotate(row["model"], (x, measured if measured is not None else reported),
                    xytext=(4, 3), textcoords="offset points", fontsize=7)
        placed += 1
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)  # room for the many 0.0 scores of small baselines
    if not placed:
        ax.text(0.5, 0.5, f"no model with a known {x_field}", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="gray")


def spread_labels(fig, gap_px: float = 1.0) -> None:
    """Move point labels (annotations) apart so that none covers another: in each panel, from the bottom up,
    a label that overlaps one already placed goes up above it (its arrow-less offset grows). Run once the
    figure is complete: it lays the figure out to measure the labels."""
    renderer = laid_out(fig)
    points_per_px = 72.0 / fig.dpi
    for ax in fig.axes:
        labels = [t for t in ax.texts if hasattr(t, "xyann")]
        placed = []
        for label in sorted(labels, key=lambda t: t.get_window_extent(renderer).y0):
            box = label.get_window_extent(renderer)
            for other in sorted(placed, key=lambda b: b.y0):
                if box.overlaps(other):
                    lift = other.y1 + gap_px - box.y0
                    x, y = label.xyann
                    label.xyann = (x, y + lift * points_per_px)
                    box = label.get_window_extent(renderer)
            placed.append(box)


def laid_out(fig):
    """Draw the figure (running its constrained layout) on an Agg canvas; returns the renderer, which measures
    texts where they will be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()
