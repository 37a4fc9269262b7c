"""HTML and Markdown of the app: completions with their repeats marked, metrics, word diffs, and one task
item's samples side by side. Model output is escaped everywhere: it is untrusted text."""
from __future__ import annotations

from html import escape

from phi_eval.app.comparison import SideRun
from phi_eval.app.diff import WordDiff
from phi_eval.app.repetition import Repetition

BOX = ("white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:0.9em;line-height:1.45;"
       "min-height:8em;max-height:32em;overflow:auto;padding:8px;border:1px solid #d0d7de;border-radius:6px")
# A completion box has one fixed height, so the sides' columns line up whatever each model wrote.
COMPLETION_BOX = BOX.replace("min-height:8em;max-height:32em", "height:22em;resize:vertical")
REPEAT = "background:#fde68a;border-radius:2px"
REMOVED = "background:#fecaca;text-decoration:line-through"
ADDED = "background:#bbf7d0"
ERROR = "color:#b91c1c"
STATUS = {"queued": "queued", "loading": "loading the model", "streaming": "streaming", "done": "done",
          "stopped": "stopped", "error": "error"}


def completion_html(text: str, rep: Repetition) -> str:
    """The completion with every repeated n-gram highlighted."""
    parts, at = [], 0
    for start, end in rep.spans:
        parts.append(escape(text[at:start]))
        parts.append(f'<mark class="repeat" style="{REPEAT}">{escape(text[start:end])}</mark>')
        at = end
    parts.append(escape(text[at:]))
    return f'<div class="completion" style="{COMPLETION_BOX}">{"".join(parts)}</div>'


def side_header(label: str, spec: str) -> str:
    """The side's name and its whole model spec (wrapped, never cut off)."""
    name = escape(spec.strip()) if spec and spec.strip() else "<em>no model chosen</em>"
    return (f'<div class="side-header" style="font-size:1.05em;line-height:1.35;overflow-wrap:anywhere;'
            f'height:4.4em;overflow-y:auto;padding:2px 0">'
            f'<b>{label}</b> · <span class="side-model">{name}</span></div>')


def metrics_html(run: SideRun | None, rep: Repetition) -> str:
    """The side's state and numbers. While it waits: for what, and for how long so far; while it streams and
    after a stop: live token counts and tokens/s. Waiting for the model and for a slot are shown apart from
    the time to the first token (which starts when generation starts)."""
    if run is None:
        return _lines(["<em>not run</em>"])
    if run.error:
        return _lines([f'<b style="{ERROR}">Error:</b> <span style="{ERROR}">{escape(run.error)}</span>'])
    state = f"<b>{STATUS[run.status]}</b>"
    if run.status in ("loading", "queued"):
        state += f": {escape(run.stage)} · {run.waited_s():.0f} s so far"
    elif run.finish_reason:
        state += f" · finish: {escape(run.finish_reason)}"
    numbers = [f"{_fixed(run.output_tokens, 0)} output tokens", f"{_fixed(run.tokens_per_s, 1)} tokens/s",
               f"first token {_seconds(run.time_to_first_token_s)}", f"repetition ({rep.n}-grams) {rep.score:.2f}"]
    waits = []
    if run.load_s is not None:
        waits.append("model already loaded" if run.was_loaded else f"model ready after {run.load_s:.1f} s")
    if run.queue_s is not None and run.queue_s >= 0.05:
        waits.append(f"queued {run.queue_s:.1f} s for a generation slot")
    return _lines([state, " · ".join(numbers), " · ".join(waits)])


def _lines(lines: list[str]) -> str:
    # A fixed number of lines, so a side's metrics never change its column's height.
    lines = (lines + ["", "", ""])[:3]
    return '<div class="metrics" style="line-height:1.5;min-height:4.5em">' + "<br>".join(lines) + "</div>"


def diff_html(diff: WordDiff, left: str, right: str) -> str:
    styles = {"removed": REMOVED, "added": ADDED}
    body = "".join(escape(text) if kind == "same" else f'<span class="{kind}" style="{styles[kind]}">{escape(text)}</span>'
                   for kind, text in diff.ops)
    legend = (f'<p><span style="{REMOVED}">only in {left}</span> · <span style="{ADDED}">only in {right}</span>'
              f" · word similarity {diff.similarity:.2f}</p>")
    return legend + f'<div class="diff" style="{BOX}">{body}</div>'


def samples_html(records: dict[str, list[dict]], verdicts: dict) -> str:
    """The item's prompt once, then one column per model: each sample's output, verdict and error."""
    prompt = next(iter(records.values()))[0].get("prompt", "")
    columns = []
    for model, samples in records.items():
        verdict = verdicts.get(model)
        color = "#15803d" if verdict and verdict.passed == verdict.total else "#b91c1c"
        cells = [f'<h4 style="margin:0 0 4px">{escape(model)} · <span style="color:{color}">'
                 f'{escape(verdict.label() if verdict else "—")}</span></h4>']
        for sample in samples:
            status = sample.get("status") or ("passed" if sample.get("passed") else "failed")
            error = " · ".join(escape(str(sample[k])) for k in ("error_kind", "reason") if sample.get(k))
            cells.append(f'<p style="margin:6px 0 2px">sample {sample.get("sample_index", 0)}: <b>{escape(status)}</b>'
                         f' · finish: {escape(str(sample.get("finish_reason")))}'
                         + (f'<br><span style="color:#b91c1c">{error}</span>' if error else "") + "</p>")
            cells.append(f'<div class="sample" style="{BOX};min-height:2em">{escape(sample.get("completion", ""))}</div>')
        columns.append(f'<div class="model-samples">{"".join(cells)}</div>')
    grid = f"display:grid;grid-template-columns:repeat({len(columns)},minmax(0,1fr));gap:12px"
    return (f'<details open><summary>prompt</summary><div style="{BOX};min-height:0">{escape(prompt)}</div></details>'
            f'<div style="{grid}">{"".join(columns)}</div>')


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _fixed(value, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"
