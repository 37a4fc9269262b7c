"""phi-eval's Gradio app: models side by side (streamed), the leaderboard as a table and plots, a run's samples.

    python app.py [--host 127.0.0.1] [--port 7860] [--max-models 4] [--max-streams 4]    (same as `phi-eval app`)

It serves on 127.0.0.1, sends no analytics, makes no share link, and the page loads nothing from outside.
Models load lazily, once per process, and are shared by every browser session (phi_eval/app/pool.py).
This file only lays out the page and wires its events; the logic is in phi_eval/app/.
"""
from __future__ import annotations

import sys
import functools
import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (the analytics switch must be set before the import)
import pandas as pd  # noqa: E402

from phi_eval import paths  # noqa: E402
from phi_eval.app import leaderboard_plots, leaderboard_view, samples_view  # noqa: E402
from phi_eval.app.comparison import SIDES, Comparison  # noqa: E402
from phi_eval.app.diff import word_diff  # noqa: E402
from phi_eval.app.pool import ModelPool  # noqa: E402
from phi_eval.app.presets import DEFAULT_MODELS, DEFAULT_PRESET, PRESETS  # noqa: E402
from phi_eval.app.render import completion_html, diff_html, metrics_markdown, samples_html  # noqa: E402
from phi_eval.app.repetition import repetition  # noqa: E402
from phi_eval.app.settings import format_stops, generation_config  # noqa: E402
from phi_eval.errors import UsageError  # noqa: E402
from phi_eval.zoo import load_zoo  # noqa: E402

DEMO_RUN = paths.PROJECT_ROOT / "runs" / "demo"  # what scripts/demo.sh writes, shown when present
SPEC_HELP = "a zoo model, or type hf:HUB_ID_OR_DIR, gguf:FILE, openai:MODEL@http://HOST:PORT/v1"


def model_choices() -> list[str]:
    """Zoo cards, and local checkpoints under $PHI_EVAL_HOME/models that no card names."""
    try:
        zoo = load_zoo()
    except UsageError:  # a broken card: its message shows when a model is chosen
        zoo = {}
    carded = {card.checkpoint for card in zoo.values()}
    local = sorted(d for d in paths.models_dir().glob("*") if (d / "config.json").is_file() and d.resolve() not in carded)
    return sorted(zoo) + [f"hf:{d}" for d in local]


def user_error(fn):
    """Bad input shows as one message in the page (gr.Error), never as a traceback."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapped(*args):
            try:
                yield from fn(*args)
            except UsageError as e:
                raise gr.Error(str(e), print_exception=False) from None
    else:
        @functools.wraps(fn)
        def wrapped(*args):
            try:
                return fn(*args)
            except UsageError as e:
                raise gr.Error(str(e), print_exception=False) from None
    return wrapped


# ----------------------------------------------------------------------------------- side by side

@dataclass
class SideUI:
    column: gr.Column
    spec: gr.Dropdown
    settings: list  # override checkbox, temperature, top-p, max tokens, seed, stop
    output: gr.HTML
    metrics: gr.Markdown
    stop: gr.Button
    retry: gr.Button


def settings_fields(preset) -> list:
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
        max_tokens = gr.Number(preset.max_tokens, precision=0, label="max tokens")
        seed = gr.Number(1234, precision=0, label="seed")
    stop = gr.Textbox(format_stops(preset.stop), lines=2, label="stop sequences (one per line; \\n = newline)")
    return [temperature, top_p, max_tokens, seed, stop]


def side_ui(index: int, default: str, choices: list[str], preset) -> SideUI:
    label = SIDES[index]
    with gr.Column(visible=index < 2 or bool(default), min_width=260) as column:
        spec = gr.Dropdown(choices, value=default, allow_custom_value=True, label=f"model {label}", info=SPEC_HELP)
        with gr.Accordion(f"override the shared settings for {label}", open=False):
            override = gr.Checkbox(False, label=f"use these settings for {label}")
            fields = settings_fields(preset)
        output = gr.HTML(completion_html("", repetition("")), elem_id=f"completion-{label}")
        metrics = gr.Markdown("*not run*", elem_id=f"metrics-{label}")
        with gr.Row():
            stop = gr.Button(f"Stop {label}", size="sm")
            retry = gr.Button(f"Retry {label}", size="sm")
    return SideUI(column, spec, [override, *fields], output, metrics, stop, retry)


def side_config(shared, values, label: str):
    """A side's config: the shared one, unless the side's override box is ticked."""
    override, *fields = values
    return (generation_config(*fields, where=f"side {label}: "), True) if override else (shared, False)


def render(comparison: Comparison, n, left, right) -> list:
    n, pair = int(n), (SIDES.index(left), SIDES.index(right))
    out = []
    for run in comparison.runs:
        rep = repetition(run.text if run else "", n)
        out += [completion_html(run.text if run else "", rep), metrics_markdown(run, rep)]
    a, b = (comparison.runs[i] for i in pair)
    diff = diff_html(word_diff(a.text, b.text), left, right) if a and b else f"*run sides {left} and {right} to see their diff*"
    return out + [diff, comparison.record(n, pair)]


def build_side_by_side(pool: ModelPool, default_models) -> None:
    preset = PRESETS[DEFAULT_PRESET]
    choices = model_choices()
    comparison = gr.State(lambda: Comparison(pool), delete_callback=lambda c: c.stop_all())
    with gr.Row():
        preset_name = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="preset prompt", scale=2)
        n_sides = gr.Radio([2, 3, 4], value=max(2, sum(map(bool, default_models))), label="models", scale=1)
    prompt = gr.Textbox(preset.prompt, lines=4, label="prompt", elem_id="prompt")
    with gr.Accordion("generation settings (shared by all sides)", open=True):
        shared = settings_fields(preset)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        stop_all = gr.Button("Stop all")
    with gr.Row(equal_height=False):
        sides = [side_ui(i, default_models[i] if i < len(default_models) else "", choices, preset)
                 for i in range(len(SIDES))]
    with gr.Accordion("repetition and diff", open=True):
        with gr.Row():
            rep_n = gr.Slider(2, 8, value=4, step=1, label="repeated n-grams of n words (highlighted above)")
            left = gr.Dropdown(list(SIDES), value="A", label="diff: from side")
            right = gr.Dropdown(list(SIDES), value="B", label="to side")
        diff = gr.HTML(elem_id="diff")
    with gr.Accordion("comparison as JSON", open=False):
        record = gr.JSON(label="prompt, settings, model identities, completions, metrics")
        export = gr.Button("Export JSON")
        export_file = gr.File(label="comparison.json")

    view = [rep_n, left, right]
    outputs = [c for side in sides for c in (side.output, side.metrics)] + [diff, record]
    side_inputs = [c for side in sides for c in (side.spec, *side.settings)]
    per_side = len(side_inputs) // len(sides)

    @user_error
    def compare(session: Comparison, text, n_active, *values):
        shared_values, view_values, side_values = values[:5], values[5:8], values[8:]
        config = generation_config(*shared_values)
        chosen = {}
        for i in range(int(n_active)):
            spec, *settings = side_values[i * per_side:(i + 1) * per_side]
            chosen[i] = (spec or "", *side_config(config, settings, SIDES[i]))
        runs = session.start(text, config, chosen)
        for _ in session.watch(runs):
            yield render(session, *view_values)

    def retry_side(index: int):
        @user_error
        def retry(session: Comparison, *values):
            shared_values, view_values, (spec, *settings) = values[:5], values[5:8], values[8:]
            config, override = side_config(generation_config(*shared_values), settings, SIDES[index])
            run = session.run_side(index, spec or "", config, override)
            for _ in session.watch([run]):
                yield render(session, *view_values)
        return retry

    generate.click(compare, [comparison, prompt, n_sides, *shared, *view, *side_inputs], outputs,
                   api_name="compare", concurrency_limit=None)
    stop_all.click(lambda session: session.stop_all(), comparison, None, api_name="stop_all", queue=False)
    for i, side in enumerate(sides):
        side.stop.click(lambda session, i=i: session.stop(i), comparison, None, api_visibility="private", queue=False)
        side.retry.click(retry_side(i), [comparison, *shared, *view, side.spec, *side.settings], outputs,
                         api_name=f"retry_{SIDES[i].lower()}", concurrency_limit=None)
    for control in view:
        control.change(render, [comparison, *view], outputs, api_visibility="private")
    preset_name.change(lambda name: (PRESETS[name].prompt, format_stops(PRESETS[name].stop), PRESETS[name].max_tokens),
                       preset_name, [prompt, shared[4], shared[2]], api_visibility="private")
    n_sides.change(lambda n: [gr.Column(visible=i < int(n)) for i in range(len(SIDES))], n_sides,
                   [side.column for side in sides], api_visibility="private")
    export.click(export_json, record, export_file, api_name="export")


def export_json(record: dict | None) -> str:
    if not record or not record.get("sides"):
        raise gr.Error("nothing to export yet: press Generate first", print_exception=False)
    path = Path(tempfile.mkdtemp(prefix="phi-eval-comparison-")) / "comparison.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------------ leaderboard

def build_leaderboard(demo: gr.Blocks, initial_rows: list[dict]) -> None:
    any_ = leaderboard_view.ANY
    rows = gr.State(initial_rows)
    files = gr.File(file_count="multiple", file_types=[".json"],
                    label="leaderboard JSON files (from phi-eval leaderboard RUN_DIR -o leaderboard.json)")
    with gr.Row():
        task = gr.Dropdown(leaderboard_view.choices(initial_rows, "task"), value=any_, label="task")
        metric = gr.Dropdown(leaderboard_view.choices(initial_rows, "metric"), value=any_, label="metric")
        kind = gr.Radio([any_, "measured", "reported"], value=any_, label="rows")
        contamination = gr.Radio([any_, "clean", "contaminated"], value=any_, label="contamination")
    with gr.Row():
        model = gr.Textbox(label="model name contains")
        sort_by = gr.Dropdown(list(leaderboard_view.COLUMNS), value="measured", label="sort by")
        descending = gr.Checkbox(True, label="descending")
    table = gr.Dataframe(headers=list(leaderboard_view.COLUMNS), interactive=False, wrap=True, label="leaderboard",
                         datatype=["number" if c in leaderboard_view.DISPLAY else "str" for c in leaderboard_view.COLUMNS])
    panel = gr.Dropdown([], label="plot", info="score against parameters, training tokens and training compute")
    plot = gr.Plot(label="scores", format="png")

    @user_error
    def show(all_rows, task_, metric_, kind_, model_, contamination_, sort_by_, descending_, panel_):
        shown = leaderboard_view.sort_rows(
            leaderboard_view.filter_rows(all_rows, task_, metric_, kind_, model_ or "", contamination_),
            sort_by_, descending_)
        panels = leaderboard_plots.panels(shown)
        title = panel_ if panel_ in panels else next(iter(panels), None)
        figure = leaderboard_plots.figure(leaderboard_plots.panel_rows(shown, panels[title]), title) if title else None
        table_ = pd.DataFrame(leaderboard_view.table(shown), columns=list(leaderboard_view.COLUMNS))
        return table_.style.format(leaderboard_view.DISPLAY, na_rep=""), gr.Dropdown(list(panels), value=title), figure

    @user_error
    def load(uploaded):
        loaded = leaderboard_view.load_leaderboards(uploaded or [])
        return (loaded, gr.Dropdown(leaderboard_view.choices(loaded, "task"), value=any_),
                gr.Dropdown(leaderboard_view.choices(loaded, "metric"), value=any_))

    inputs, outputs = [rows, task, metric, kind, model, contamination, sort_by, descending, panel], [table, panel, plot]
    files.upload(load, files, [rows, task, metric], api_name="load_leaderboard").then(
        show, inputs, outputs, api_name="leaderboard")
    for control in inputs[1:]:
        control.change(show, inputs, outputs, api_visibility="private")
    if initial_rows:
        demo.load(show, inputs, outputs, api_visibility="private")


# ---------------------------------------------------------------------------------------- samples

def build_samples(default_dir: str) -> None:
    with gr.Row():
        directory = gr.Textbox(default_dir, label="run directory (the --out of phi-eval run)", scale=3)
        load = gr.Button("Load", scale=1)
    with gr.Row():
        task = gr.Dropdown([], label="task")
        keep = gr.Radio(list(samples_view.FILTERS), value="all", label="items",
                        info="passed: every model passed · failed: no model passed · differs: the models disagree")
    items = gr.Dataframe(interactive=False, label="items (click one to see it)", max_height=300)
    item = gr.Dropdown([], label="item")
    view = gr.HTML(elem_id="samples-item")

    @user_error
    def tasks(directory_):
        run = samples_view.load_run(directory_)
        names = sorted(run.tasks)
        return gr.Dropdown(names, value=names[0])

    @user_error
    def list_items(directory_, task_, keep_):
        if not task_:
            return pd.DataFrame(), gr.Dropdown([], value=None)
        headers, rows = samples_view.load_run(directory_).item_table(task_, keep_)
        ids = [row[0] for row in rows]
        return pd.DataFrame(rows, columns=headers), gr.Dropdown(ids, value=ids[0] if ids else None)

    @user_error
    def show_item(directory_, task_, doc_id):
        if not task_ or not doc_id:
            return "*no item chosen*"
        run = samples_view.load_run(directory_)
        return samples_html(run.records(task_, doc_id), run.verdicts(task_, doc_id))

    def pick(evt: gr.SelectData, table_value):
        return table_value.iloc[evt.index[0], 0]

    load.click(tasks, directory, task, api_name="samples_tasks")
    task.change(list_items, [directory, task, keep], [items, item], api_name="samples_items")
    keep.change(list_items, [directory, task, keep], [items, item], api_visibility="private")
    item.change(show_item, [directory, task, item], view, api_name="samples_item")
    items.select(pick, items, item, api_visibility="private")


# ------------------------------------------------------------------------------------------- page

def build(default_models=DEFAULT_MODELS, pool: ModelPool | None = None, leaderboards=(), samples_dir: str = "") -> gr.Blocks:
    pool = pool or ModelPool()
    with gr.Blocks(title="phi-eval") as demo:
        gr.Markdown("# phi-eval")
        with gr.Tab("Side by side"):
            build_side_by_side(pool, default_models)
        with gr.Tab("Leaderboard"):
            build_leaderboard(demo, leaderboard_view.load_leaderboards(leaderboards) if leaderboards else [])
        with gr.Tab("Samples"):
            build_samples(samples_dir)
    return demo


def main(host: str = "127.0.0.1", port: int = 7860, max_models: int = 4, max_streams: int = 4) -> None:
    leaderboards = [DEMO_RUN / "leaderboard.json"] if (DEMO_RUN / "leaderboard.json").is_file() else []
    demo = build(pool=ModelPool(max_models, max_streams), leaderboards=leaderboards,
                 samples_dir=str(DEMO_RUN) if DEMO_RUN.is_dir() else "")
    demo.queue(max_size=64).launch(server_name=host, server_port=port, share=False)


if __name__ == "__main__":
    from phi_eval.cli import main as cli_main  # one set of flags for `python app.py` and `phi-eval app`

    sys.exit(cli_main(["app", *sys.argv[1:]]))
