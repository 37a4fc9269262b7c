"""phi-eval's Gradio app: models side by side (streamed), the leaderboard as a table and plots, a run's samples.

    phi-eval app [--host 127.0.0.1] [--port 7860] [--max-models 4] [--max-streams 4] [--no-preload]
                                                                                 (or `python app.py`)

It serves on 127.0.0.1, sends no analytics, makes no share link, and the page loads nothing from outside.
Models load once per process, in parallel where memory allows, and are shared by every browser session
(phi_eval/app/pool.py); the default comparison's models are preloaded at start unless --no-preload.
This module only lays out the page and wires its events; the logic is in the other phi_eval/app/ modules.
"""
from __future__ import annotations

import functools
import html
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
from phi_eval.app.choices import Choice, model_choices  # noqa: E402
from phi_eval.app.assets import assets  # noqa: E402
from phi_eval.app.pool import ModelPool  # noqa: E402
from phi_eval.app.presets import DEFAULT_MODELS, DEFAULT_PRESET, PRESETS  # noqa: E402
from phi_eval.app.render import completion_html, diff_html, metrics_html, samples_html, side_header  # noqa: E402
from phi_eval.app.repetition import repetition  # noqa: E402
from phi_eval.app.settings import field_problems, format_stops, generation_config  # noqa: E402
from phi_eval.errors import UsageError  # noqa: E402

# gradio's queue looks for new events every 1 ms (and for progress to send every 10 ms while an event runs):
# each wake-up takes a core from the models' threads on a 2-core machine. Every 50 ms starts an event at most
# 50 ms later; no event here reports gr.Progress, so its loop can wait 0.1 s. Measured: 22% less of the app's
# CPU per streamed token than 10 ms + 10 ms (benchmarks/RESULTS.md, app streaming).
QUEUE_POLL_S = 0.05
PROGRESS_POLL_S = 0.1
DEMO_RUN = paths.PROJECT_ROOT / "runs" / "demo"  # what scripts/demo.sh writes, shown when present
SPEC_HELP = "a zoo model, or type hf:HUB_ID_OR_DIR, gguf:FILE, openai:MODEL@http://HOST:PORT/v1"


def user_error(fn):
    """Bad input shows as one message (gr.Error), never as a traceback. In the page, the events' validators
    (below) catch bad input first and show it at the field to fix; this covers API calls."""
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


def checks(problems) -> list:
    """One gr.validate per event input: a problem shows at its field, and the event does not run."""
    validations = [gr.validate(problem is None, problem or "") for problem in problems]
    return validations[0] if len(validations) == 1 else validations  # gradio wants one input's alone


# ----------------------------------------------------------------------------------- side by side

@dataclass
class SideUI:
    column: gr.Column
    header: gr.HTML
    spec: gr.Dropdown
    settings: list  # override checkbox, temperature, top-p, max tokens, seed, stop
    output: gr.HTML
    metrics: gr.HTML
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


def side_ui(index: int, default: str, choices: list[Choice], preset, visible: bool) -> SideUI:
    label = SIDES[index]
    with gr.Column(visible=visible, min_width=260, elem_id=f"side-{label}") as column:
        header = gr.HTML(side_header(label, default), elem_id=f"header-{label}")
        spec = gr.Dropdown([(c.label, c.value) for c in choices], value=default, allow_custom_value=True,
                           label=f"model {label}", info=SPEC_HELP, elem_classes="model-spec", elem_id=f"spec-{label}")
        output = gr.HTML(completion_html("", repetition("")), elem_id=f"completion-{label}")
        metrics = gr.HTML(metrics_html(None, repetition("")), elem_id=f"metrics-{label}")
        with gr.Row():
            stop = gr.Button(f"Stop {label}", size="sm")
            retry = gr.Button(f"Retry {label}", size="sm")
        # Below the output, so opening it never moves this side's completion away from the others'.
        with gr.Accordion(f"override the shared settings for {label}", open=False):
            override = gr.Checkbox(False, label=f"use these settings for {label}")
            fields = settings_fields(preset)
    spec.change(lambda text: side_header(label, text or ""), spec, header, api_visibility="private", queue=False)
    return SideUI(column, header, spec, [override, *fields], output, metrics, stop, retry)


def side_config(shared, values, label: str):
    """A side's config: the shared one, unless the side's override box is ticked."""
    override, *fields = values
    return (generation_config(*fields, where=f"side {label}: "), True) if override else (shared, False)


def side_problems(index: int, spec, override, *fields) -> list:
    """Problems of one side's inputs (spec, override box, its four numbers, stops), for a validator."""
    label = SIDES[index]
    numbers = field_problems(*fields[:4], where=f"side {label}: ") if override else [None] * 4
    chosen = None if (spec or "").strip() else f"no model chosen for side {label}: pick one or type a spec"
    return [chosen, None, *numbers, None]


def render(comparison: Comparison, n, left, right) -> list:
    n, pair = int(n), (SIDES.index(left), SIDES.index(right))
    out = []
    for run in comparison.runs:
        rep = repetition(run.text if run else "", n)
        out += [completion_html(run.text if run else "", rep), metrics_html(run, rep)]
    a, b = (comparison.runs[i] for i in pair)
    diff = (diff_html(word_diff(a.text, b.text), left, right) if a and b
            else f"<em>run sides {left} and {right} to see their diff</em>")
    return out + [diff, comparison.record(n, pair)]


def build_side_by_side(pool: ModelPool, default_models) -> None:
    preset = PRESETS[DEFAULT_PRESET]
    choices = model_choices()
    n_default = max(2, sum(1 for m in default_models if m))
    comparison = gr.State(lambda: Comparison(pool), delete_callback=lambda c: c.stop_all())
    with gr.Row():
        preset_name = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="preset prompt", scale=2)
        n_sides = gr.Radio([2, 3, 4], value=n_default, label="models", scale=1)
    prompt = gr.Textbox(preset.prompt, lines=4, label="prompt", elem_id="prompt")
    with gr.Accordion("generation settings (shared by all sides)", open=True):
        shared = settings_fields(preset)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        stop_all = gr.Button("Stop all")
    # Every part of a side has a fixed height (header, box, completion, metrics), so the sides line up
    # whatever their models wrote; a side's override opens below its output and moves no one's output.
    with gr.Row(equal_height=False):
        sides = [side_ui(i, default_models[i] if i < len(default_models) else "", choices, preset, i < n_default)
                 for i in range(len(SIDES))]
    with gr.Accordion("repetition and diff", open=True):
        with gr.Row():
            rep_n = gr.Slider(2, 8, value=4, step=1, label="repeated n-grams of n words (highlighted above)")
            left = gr.Dropdown(list(SIDES[:n_default]), value="A", label="diff: from side", elem_id="diff-left")
            right = gr.Dropdown(list(SIDES[:n_default]), value="B", label="to side", elem_id="diff-right")
        diff = gr.HTML(elem_id="diff")
    with gr.Accordion("comparison as JSON", open=False):
        record = gr.JSON(label="prompt, settings, model identities, completions, metrics")
        export = gr.Button("Export JSON")
        export_file = gr.File(label="comparison.json")

    view = [rep_n, left, right]
    outputs = [c for side in sides for c in (side.output, side.metrics)] + [diff, record]
    side_inputs = [c for side in sides for c in (side.spec, *side.settings)]
    per_side = len(side_inputs) // len(sides)

    def validate_compare(session, text, n_active, *values):
        problems = [None, None if (text or "").strip() else "the prompt is empty: type one or pick a preset", None]
        problems += field_problems(*values[:4]) + [None] * 4
        for i in range(len(SIDES)):
            side_values = values[8 + i * per_side:8 + (i + 1) * per_side]
            problems += side_problems(i, *side_values) if i < int(n_active) else [None] * per_side
        return checks(problems)

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
        def validate(session, *values):
            return checks([None, *field_problems(*values[:4]), None, None, None, None, *side_problems(index, *values[8:])])

        @user_error
        def retry(session: Comparison, *values):
            shared_values, view_values, (spec, *settings) = values[:5], values[5:8], values[8:]
            config, override = side_config(generation_config(*shared_values), settings, SIDES[index])
            run = session.run_side(index, spec or "", config, override)
            for _ in session.watch([run]):
                yield render(session, *view_values)
        return retry, validate

    generate.click(compare, [comparison, prompt, n_sides, *shared, *view, *side_inputs], outputs,
                   api_name="compare", concurrency_limit=None, validator=validate_compare)
    stop_all.click(lambda session: session.stop_all(), comparison, None, api_name="stop_all", queue=False)
    for i, side in enumerate(sides):
        retry, validate = retry_side(i)
        side.stop.click(lambda session, i=i: session.stop(i), comparison, None, api_visibility="private", queue=False)
        side.retry.click(retry, [comparison, *shared, *view, side.spec, *side.settings], outputs,
                         api_name=f"retry_{SIDES[i].lower()}", concurrency_limit=None, validator=validate)
    for control in view:
        control.change(render, [comparison, *view], outputs, api_visibility="private")
    preset_name.change(lambda name: (PRESETS[name].prompt, format_stops(PRESETS[name].stop), PRESETS[name].max_tokens),
                       preset_name, [prompt, shared[4], shared[2]], api_visibility="private")

    def show_sides(n, left_, right_):
        shown = list(SIDES[:int(n)])  # the diff offers only the sides on the page
        return ([gr.Column(visible=i < int(n)) for i in range(len(SIDES))]
                + [gr.Dropdown(shown, value=left_ if left_ in shown else "A"),
                   gr.Dropdown(shown, value=right_ if right_ in shown else "B")])

    n_sides.change(show_sides, [n_sides, left, right], [side.column for side in sides] + [left, right],
                   api_visibility="private")
    export.click(export_json, record, export_file, api_name="export",
                 validator=lambda record_: checks([None if record_ and record_.get("sides")
                                                   else "nothing to export yet: press Generate first"]))


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
    problems = gr.HTML(elem_id="leaderboard-problems")
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
                         elem_id="leaderboard-table",
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

    def load(uploaded, current_rows):
        """Rows of the good files; a bad file is named in one message under the upload box and taken out of
        it, so the view keeps working and the next upload is not spoiled by it."""
        good, problems = [], []
        for path in uploaded or []:
            try:
                leaderboard_view.load_leaderboards([path])
                good.append(path)
            except UsageError as e:
                problems.append(str(e))
        loaded = leaderboard_view.load_leaderboards(good) if good else current_rows
        message = "".join(f'<p class="problem" style="color:#b91c1c;margin:2px 0">{html.escape(p)}</p>'
                          for p in problems)
        return (loaded, gr.Dropdown(leaderboard_view.choices(loaded, "task"), value=any_),
                gr.Dropdown(leaderboard_view.choices(loaded, "metric"), value=any_), good or None, message)

    inputs, outputs = [rows, task, metric, kind, model, contamination, sort_by, descending, panel], [table, panel, plot]
    files.upload(load, [files, rows], [rows, task, metric, files, problems], api_name="load_leaderboard").then(
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

    def validate_directory(directory_):
        try:
            samples_view.load_run(directory_)
            return checks([None])
        except UsageError as e:
            return checks([str(e)])

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
            return "<em>no item chosen</em>"
        run = samples_view.load_run(directory_)
        return samples_html(run.records(task_, doc_id), run.verdicts(task_, doc_id))

    def pick(evt: gr.SelectData, table_value):
        return table_value.iloc[evt.index[0], 0]

    load.click(tasks, directory, task, api_name="samples_tasks", validator=validate_directory)
    task.change(list_items, [directory, task, keep], [items, item], api_name="samples_items")
    keep.change(list_items, [directory, task, keep], [items, item], api_visibility="private")
    item.change(show_item, [directory, task, item], view, api_name="samples_item")
    items.select(pick, items, item, api_visibility="private")


# ------------------------------------------------------------------------------------------- page

def build(default_models=DEFAULT_MODELS, pool: ModelPool | None = None, leaderboards=(), samples_dir: str = "") -> gr.Blocks:
    pool = pool or ModelPool()
    with gr.Blocks(title="phi-eval") as demo:
        assets()
        gr.Markdown("# phi-eval")
        with gr.Tab("Side by side"):
            build_side_by_side(pool, default_models)
        with gr.Tab("Leaderboard"):
            build_leaderboard(demo, leaderboard_view.load_leaderboards(leaderboards) if leaderboards else [])
        with gr.Tab("Samples"):
            build_samples(samples_dir)
    return demo


def queued(demo: gr.Blocks) -> gr.Blocks:
    """The page with its event queue: room for 64 waiting events, polled every QUEUE_POLL_S."""
    demo.queue(max_size=64)
    for setting, seconds in (("sleep_when_free", QUEUE_POLL_S), ("progress_update_sleep_when_free", PROGRESS_POLL_S)):
        if hasattr(demo._queue, setting):  # gradio's own settings, not in its public API
            setattr(demo._queue, setting, seconds)
    return demo


def main(host: str = "127.0.0.1", port: int = 7860, max_models: int = 4, max_streams: int = 4,
         preload: bool = True) -> None:
    leaderboards = [DEMO_RUN / "leaderboard.json"] if (DEMO_RUN / "leaderboard.json").is_file() else []
    pool = ModelPool(max_models, max_streams)
    if preload:  # the default comparison's models load while the page is opened (--no-preload skips it)
        pool.preload(DEFAULT_MODELS[:max_models])
    demo = build(pool=pool, leaderboards=leaderboards, samples_dir=str(DEMO_RUN) if DEMO_RUN.is_dir() else "")
    queued(demo).launch(server_name=host, server_port=port, share=False)

