"""The page's own CSS and script, served by the app itself (nothing is fetched from outside).

They ride on an empty gr.HTML (its `head` and `js_on_load`), so every way of launching the Blocks gets them.
"""
from __future__ import annotations

CSS = """
/* Leaderboard headers read as words: never one letter per line. */
#leaderboard-table th, #leaderboard-table th * { white-space: nowrap !important; word-break: normal !important;
  overflow-wrap: normal !important; }
"""

# Enter in a model box keeps what was typed. Gradio's dropdown would put the first matching choice in its place
# (`phi` became `phi-1`, an empty box `codegen-16B-mono`); here Enter just commits the box, as leaving it does
# (a dropdown that allows custom values keeps typed text on blur). An option reached with the arrow keys is
# still chosen by Enter.
ENTER_KEEPS_TYPED = """
if (!window.phiEvalEnterKeepsTyped) {
  window.phiEvalEnterKeepsTyped = true;
  const navigated = new WeakSet();
  const modelBox = (e) => e.target instanceof HTMLInputElement && e.target.closest('.model-spec');
  const onKey = (e) => {
    if (!modelBox(e)) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') { navigated.add(e.target); return; }
    if (e.key !== 'Enter') { navigated.delete(e.target); return; }
    if (navigated.has(e.target)) { if (e.type === 'keyup') navigated.delete(e.target); return; }
    e.stopImmediatePropagation();
    e.preventDefault();
    if (e.type === 'keydown') e.target.blur();
  };
  document.addEventListener('keydown', onKey, true);
  document.addEventListener('keyup', onKey, true);
}
"""


def assets():
    import gradio as gr

    return gr.HTML("", head=f"<style>{CSS}</style>", js_on_load=ENTER_KEEPS_TYPED, elem_id="page-assets",
                   padding=False)
