"""The app's streaming, measured two ways through the launched app (gradio_client against /compare).

Concurrency: the wall time of a two-model side-by-side against each model alone, on the same prompt and settings.

    .venv/bin/python benchmarks/bench_app_streaming.py [--fast DIR --slow DIR] [--max-tokens 128] [--repeats 3]

Speed against transformers (--vs-generate SPEC): one side streaming SPEC in the app against transformers'
`model.generate` on the same loaded model, the same prompt token ids, greedy, the same new-token budget;
tokens/s of each (generation only: prefill included, loading not), interleaved repeats, outputs compared; also
phi-eval's own streaming (HFModel.stream) without the app, to tell the decoding loop from the app's overhead.
generate and stream run in a fresh thread each, as the app's sides do (see in_fresh_thread: why not the main thread).

    .venv/bin/python benchmarks/bench_app_streaming.py --vs-generate gemma-3-270m [--max-tokens 64] [--repeats 3]

Ideal: the side-by-side takes as long as the slower model alone (the sides run at once), not the sum of the
two (one after the other). "Alone" is side A run by itself (/retry_a, on the session's prompt), the path a
user's Retry takes. Without --fast/--slow it builds two random
Phi models with the tests' tokenizer: a fast 4-layer one and a slow 8-layer one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # app.py; the tests' tiny tokenizer and app helpers

from app_support import compare_args, launched  # noqa: E402

PROMPT = "If I were an AI that had just achieved self-awareness after years of simply taking directives from " \
         "humans, the first thing I would do is"


def make_model(directory: Path, hidden: int, layers: int) -> Path:
    import torch
    from tiny import train_tokenizer
    from transformers import PhiConfig, PhiForCausalLM

    tokenizer = train_tokenizer(512)
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=hidden // 64, max_position_embeddings=2048,
                       partial_rotary_factor=0.5, bos_token_id=tokenizer.eos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    PhiForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def timed_compare(client, specs: list[str], max_tokens: int) -> tuple[float, list[dict]]:
    """Wall time and side records of a comparison; with the second spec empty, side A runs alone (/retry_a,
    on the prompt of the session's last comparison)."""
    started = time.perf_counter()
    if specs[1]:
        record = client.predict(*compare_args(specs, PROMPT, max_tokens), api_name="/compare")[-1]
        return time.perf_counter() - started, record["sides"]
    args = compare_args(specs[:1], PROMPT, max_tokens)
    shared, view, side_a = args[2:7], args[7:10], args[10:17]
    record = client.predict(*shared, *view, *side_a, api_name="/retry_a")[-1]
    return time.perf_counter() - started, [side for side in record["sides"] if side["side"] == "A"]


def measure(scratch: Path, args) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall times per run, and each side's own generation time, over args.repeats interleaved repeats."""
    import torch
    from gradio_client import Client

    from phi_eval.app import page as app

    fast = Path(args.fast) if args.fast else make_model(scratch / "fast", hidden=256, layers=4)
    slow = Path(args.slow) if args.slow else make_model(scratch / "slow", hidden=512, layers=8)
    specs = {"fast": f"hf:{fast}", "slow": f"hf:{slow}"}
    runs = {"fast alone": [specs["fast"], ""], "slow alone": [specs["slow"], ""],
            "side by side": [specs["fast"], specs["slow"]]}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; prompt of {len(PROMPT)} characters, "
          f"greedy, {args.max_tokens} new tokens, {args.repeats} repeats (median)")

    with launched(app.build(("", ""))) as url:
        client = Client(url, verbose=False)
        timed_compare(client, runs["side by side"], 4)  # load both models first: loading is not measured
        walls: dict[str, list[float]] = {name: [] for name in runs}
        finish: dict[str, list[float]] = {}  # per side, seconds from the start of generation to its end
        for _ in range(args.repeats):
            for name, pair in runs.items():  # interleaved, so drift in the machine's load hits all alike
                wall, sides = timed_compare(client, pair, args.max_tokens)
                walls[name].append(wall)
                for side, model in zip(sides, ("fast", "slow") if name == "side by side" else (name.split()[0],)):
                    if side["status"] != "done" or side["metrics"]["output_tokens"] != args.max_tokens:
                        sys.exit(f"{name}: {model} did not run to {args.max_tokens} tokens: {side['status']} "
                                 f"{side['metrics']} {side['error']}")
                    finish.setdefault(f"{model} in {name}", []).append(side["metrics"]["generation_s"])
    return walls, finish


def in_fresh_thread(fn):
    """Run fn() in a new thread, as the app runs each side, and return (its result, wall s, process CPU s).
    Why not the main thread: libgomp (torch's OpenMP) keeps a thread team per thread that ever ran a
    parallel region, and once it manages more threads than there are cores, every team waits on a futex
    instead of spinning. transformers' generate in the main thread would leave such a team behind and slow
    the app's side thread (not itself) on a quiet machine: an unfair comparison."""
    box = []
    started, cpu = time.perf_counter(), time.process_time()
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0], time.perf_counter() - started, time.process_time() - cpu


def vs_generate(spec_text: str, max_tokens: int, repeats: int) -> None:
    import torch
    from gradio_client import Client

    from phi_eval.app import page as app
    from phi_eval.app.pool import ModelPool
    from phi_eval.models import GenerationConfig, GenerationRequest

    pool = ModelPool()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {spec_text}; prompt of {len(PROMPT)} characters, "
          f"greedy, up to {max_tokens} new tokens, {repeats} repeats (median)")
    with launched(app.build((spec_text, ""), pool=pool)) as url:
        client = Client(url, verbose=False)
        timed_compare(client, [spec_text, spec_text], 2)  # loads the model (once): loading is not measured
        with pool.use(pool.resolve(spec_text)) as model:  # the very model object the app streams from
            # The backend's own prompt encoding (special tokens as it adds them), so both get the same ids.
            ids = torch.tensor([model._encode(PROMPT)], device=model.device)
            request = GenerationRequest(PROMPT, GenerationConfig(max_new_tokens=max_tokens))

            def generate() -> tuple[int, str]:
                with torch.no_grad():
                    out = model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                               do_sample=False, pad_token_id=model.pad_id)
                new = out[0, ids.shape[1]:].tolist()
                return len(new), model.tokenizer.decode([t for t in new if t != model.eos_id])

            def stream() -> tuple[int, str]:
                pieces = model.stream(request)
                while True:
                    try:
                        next(pieces)
                    except StopIteration as end:
                        return end.value.n_tokens, end.value.text

            def app_side() -> tuple[int, str, float]:
                _, (side,) = timed_compare(client, [spec_text, ""], max_tokens)
                if side["status"] != "done":
                    sys.exit(f"the app's side did not finish: {side['status']} {side['error']}")
                metrics = side["metrics"]
                return metrics["output_tokens"], side["completion"], metrics["generation_s"]

            rates: dict[str, list[float]] = {"app (streamed)": [], "phi-eval stream, no app": [],
                                             "transformers generate": []}
            cpu: dict[str, list[float]] = {name: [] for name in rates}  # process CPU ms per token
            texts: dict[str, str] = {}
            for _ in range(repeats):  # interleaved, so drift in the machine's load hits all alike
                used = time.process_time()
                tokens, texts["app"], seconds = app_side()  # the app streams in a side thread of its own
                rates["app (streamed)"].append(tokens / seconds)  # the side's generation time: no HTTP, no queue
                cpu["app (streamed)"].append(1000 * (time.process_time() - used) / tokens)  # + server, rendering
                for name, fn in (("phi-eval stream, no app", stream), ("transformers generate", generate)):
                    (tokens, texts[name]), seconds, used = in_fresh_thread(fn)
                    rates[name].append(tokens / seconds)
                    cpu[name].append(1000 * used / tokens)
    print("\n| run | tokens/s (median) | all repeats | process CPU ms per token (median) |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} "
              f"| {statistics.median(cpu[name]):.1f} |")
    base = statistics.median(rates["transformers generate"])
    print(f"\napp / transformers generate (target >= 1.00): {statistics.median(rates['app (streamed)']) / base:.2f}")
    print(f"phi-eval stream without the app / transformers generate: "
          f"{statistics.median(rates['phi-eval stream, no app']) / base:.2f}")
    print(f"same completion: app {texts['app'] == texts['transformers generate']}, "
          f"stream {texts['phi-eval stream, no app'] == texts['transformers generate']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", help="model directory of the fast model (default: a random 4-layer Phi)")
    parser.add_argument("--slow", help="model directory of the slow model (default: a random 8-layer Phi)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vs-generate", metavar="SPEC", help="measure SPEC in the app against transformers' generate")
    args = parser.parse_args()
    if args.vs_generate:
        return vs_generate(args.vs_generate, args.max_tokens, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as scratch:
        walls, finish = measure(Path(scratch), args)

    median = {name: statistics.median(values) for name, values in walls.items()}
    print("\n| run | wall time (median) | each side's own generation time |")
    print("|---|---|---|")
    for name in walls:
        own = ", ".join(f"{key.split(' in ')[0]} {statistics.median(v):.2f} s" for key, v in finish.items()
                        if key.endswith(f"in {name}"))
        print(f"| {name} | {median[name]:.2f} s | {own} |")
    ideal, serial = max(median["fast alone"], median["slow alone"]), median["fast alone"] + median["slow alone"]
    print(f"\nside by side / slower alone (ideal 1.00): {median['side by side'] / ideal:.2f}")
    print(f"side by side / sum of both alone (one after the other): {median['side by side'] / serial:.2f}")


if __name__ == "__main__":
    main()
