"""Shared by the app's tests: a launched app, the /compare endpoint's arguments, a small run directory."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from phi_eval.paths import PROJECT_ROOT


SIDE_DEFAULTS = [False, 0.0, 1.0, 64, 1, ""]  # override off, temperature, top-p, max tokens, seed, stop


@contextmanager
def launched(demo):
    """The app served on a free port of 127.0.0.1 in this process; yields its URL."""
    from phi_eval.app.page import queued

    _, url, _ = queued(demo).launch(server_name="127.0.0.1", server_port=None,
                                    prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def compare_args(specs, prompt, max_tokens=64, temperature=0.0, stop="", seed=1234, n=4, overrides=None):
    """Positional arguments of /compare: prompt, number of sides, the shared settings, the view
    (n-gram size, diff sides), then per side its spec, override box and settings."""
    sides = []
    for i in range(4):
        settings = (overrides or {}).get(i, SIDE_DEFAULTS)
        sides += [specs[i] if i < len(specs) else "", *settings]
    return [prompt, len(specs), temperature, 1.0, max_tokens, seed, stop, n, "A", "B", *sides]


def write_run(out: Path) -> Path:
    """An --out directory of two models on three HumanEval items: both pass item 0, both fail item 1,
    only the first passes item 2 (the second fails it with an error)."""
    verdicts = {"model-one": [True, False, True], "model-two": [True, False, False]}
    for model, passed in verdicts.items():
        directory = out / f"hf__{model}"
        directory.mkdir(parents=True)
        (directory / "results.json").write_text(json.dumps({"model_name": model, "results": {
            "humaneval": {"pass@1,none": sum(passed) / 3, "pass@1_stderr,none": 0.1}}}))
        with open(directory / "samples_humaneval.jsonl", "w") as f:
            for i, ok in enumerate(passed):
                f.write(json.dumps({
                    "doc_id": f"HumanEval/{i}", "sample_index": 0, "prompt": f"def f{i}(x):\n",
                    "completion": f"    return x + {i}  # by {model}\n", "finish_reason": "stop", "passed": ok,
                    "status": "passed" if ok else ("error" if i == 2 else "failed"),
                    "error_kind": None if ok else ("error" if i == 2 else "failed"),
                    "reason": None if ok else ("NameError: name 'y' is not defined" if i == 2 else "AssertionError"),
                }) + "\n")
    return out


def write_leaderboard(path: Path) -> Path:
    """A leaderboard.json built by phi-eval from two runs: phi-1 (a zoo card, so the other cards' reported
    HumanEval numbers join as reported rows) and a tiny model whose contamination report flags 12 items."""
    from phi_eval.report.leaderboard import build_leaderboard, write_json

    runs = {"phi-1": ("phi-1", None, 0.45, None),
            "hf__tiny": (None, 1_843_200, 0.0366, {"humaneval": {"flagged": 12, "clean": 152}})}
    out = path.parent / "runs"
    for slug, (card, parameters, score, contamination) in runs.items():
        (out / slug).mkdir(parents=True)
        model = card or "tiny"
        (out / slug / "results.json").write_text(json.dumps({
            "results": {"humaneval": {"pass@1,none": score, "pass@1_stderr,none": 0.01}},
            "n-samples": {"humaneval": {"original": 164, "effective": 164}}, "n-shot": {"humaneval": 0},
            "model_name": model, "config": {"model": model, "model_card": card, "parameters": parameters},
            "contamination": contamination}))
    write_json(build_leaderboard([out]), path)
    return path


def streamed(model, request):
    """(pieces, the stream's returned Completion)."""
    pieces, stream = [], model.stream(request)
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            return pieces, end.value
