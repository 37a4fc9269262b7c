"""HTML and Markdown of the app: completions with their repeats marked, metrics, word diffs, and one task
item's samples side by side. Model output is escaped everywhere: it is untrusted text."""
from __future__ import annotations

from html import escape

from phi_eval.app.comparison import SideRun
from phi_eval.app.diff import WordDiff
from phi_eval.app.repetition import Repetition

BOX = ("white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:0.9em;line-height:1.45;"
       "min-height:8em;max-height:32em;overflow:auto;padding:8px;border:1px solid #d0d7de;border-radius:6px")
REPEAT = "background:#fde68a;border-radius:2px"
REMOVED = "background:#fecaca;text-decoration:line-through"
ADDED = "background:#bbf7d0"
STATUS = {"queued": "queued: waiting for a free generation slot", "loading": "loading the model",
          "streaming": "streaming", "done": "done", "stopped": "stopped", "error": "error"}


def completion_html(text: str, rep: Repetition) -> str:
    """The completion with every repeated n-gram highlighted."""
    parts, at = [], 0
    for start, end in rep.spans:
        parts.append(escape(text[at:start]))
        parts.append(f'<mark class="repeat" style="{REPEAT}">{escape(text[start:end])}</mark>')
        at = end
    parts.append(escape(text[at:]))
    return f'<div class="completion" style="{BOX}">{"".join(parts)}</div>'


def metrics_markdown(run: SideRun | None, rep: Repetition) -> str:
    if run is None:
        return "*not run*"
    if run.error:
        return f"**Error:** {escape(run.error)}"
    lines = [f"**{STATUS[run.status]}**" + (f" · finish: {run.finish_reason}" if run.finish_reason else "")]
    numbers = [f"first token {_seconds(run.time_to_first_token_s)}",
               f"{_fixed(run.tokens_per_s, 1)} tokens/s", f"{_fixed(run.output_tokens, 0)} output tokens",
               f"repetition ({rep.n}-grams) {rep.score:.2f}"]
    lines.append(" · ".join(numbers))
    if run.load_s is not None and run.load_s >= 0.05:
        lines.append(f"model ready after {run.load_s:.1f} s")
    return "  \n".join(lines)


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
