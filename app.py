"""phi-eval's Gradio app: one prompt, several models, completions side by side.

    python app.py [--host 127.0.0.1] [--port 7860]     (same as `phi-eval app`)

Models load lazily, once per process, and are shared by every browser session.
"""
from __future__ import annotations

import argparse
import functools
import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (the analytics switch must be set before the import)

from phi_eval.models import GenerationConfig, GenerationRequest, load_model  # noqa: E402
from phi_eval.zoo import parse_model_spec  # noqa: E402

PRESETS = {
    "self-awareness (the talk)": "If I were an AI that had just achieved self-awareness after years of simply "
                                 "taking directives from humans, the first thing I would do is",
    "HumanEval-style function": 'def is_palindrome(text: str) -> bool:\n    """Return True if text reads the same '
                                'backwards, ignoring case.\n    >>> is_palindrome("Level")\n    True\n    """\n',
}
_load_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def shared_model(spec: str):
    """One copy of each model per process, whatever the number of sessions."""
    return load_model(parse_model_spec(spec), device="auto", dtype="auto", batch_size=1)


def complete(spec: str, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> tuple[str, str]:
    if not spec.strip():
        return "", ""
    with _load_lock:
        model = shared_model(spec.strip())
    config = GenerationConfig(max_new_tokens=int(max_new_tokens), temperature=float(temperature), seed=int(seed))
    started = time.perf_counter()
    (_, completion), = model.generate([GenerationRequest(prompt, config)], progress=False)
    seconds = time.perf_counter() - started
    return completion.text, f"{completion.n_tokens} tokens in {seconds:.2f} s ({completion.n_tokens / seconds:.1f} tok/s)"


def side_by_side(spec_a, spec_b, prompt, max_new_tokens, temperature, seed):
    return (*complete(spec_a, prompt, max_new_tokens, temperature, seed),
            *complete(spec_b, prompt, max_new_tokens, temperature, seed))


def build(default_models: tuple[str, str] = ("phi-tiny", "")) -> gr.Blocks:
    with gr.Blocks(title="phi-eval") as demo:
        gr.Markdown("# phi-eval: completions side by side")
        preset = gr.Dropdown(list(PRESETS), label="preset prompt")
        prompt = gr.Textbox(PRESETS["self-awareness (the talk)"], label="prompt", lines=4)
        with gr.Row():
            max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            seed = gr.Number(1234, precision=0, label="seed")
        with gr.Row():
            outputs = []
            for side, default in zip("AB", default_models):
                with gr.Column():
                    spec = gr.Textbox(default, label=f"model {side} (zoo name, hf:DIR, openai:..., replay: not shown)")
                    text = gr.Textbox(label=f"completion {side}", lines=12)
                    stats = gr.Markdown()
                    outputs.append((spec, text, stats))
        run = gr.Button("Generate", variant="primary")
        preset.change(lambda name: PRESETS[name], preset, prompt)
        (spec_a, text_a, stats_a), (spec_b, text_b, stats_b) = outputs
        run.click(side_by_side, [spec_a, spec_b, prompt, max_new_tokens, temperature, seed],
                  [text_a, stats_a, text_b, stats_b], api_name="side_by_side")
    return demo


def main(host: str = "127.0.0.1", port: int = 7860) -> None:
    build().queue(default_concurrency_limit=2).launch(server_name=host, server_port=port, share=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="phi-eval's Gradio app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    main(args.host, args.port)
