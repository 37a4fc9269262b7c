"""One self-contained check for a lent GPU (< 8 minutes on an H100): phi-eval training of a
phi-1-small-sized model (recipes/phi-1-small.yaml's architecture: 20 layers, 1024 hidden,
16 heads, ~0.36B parameters) for a few hundred steps in bf16, with tokens/s, MFU against
the GPU's measured bf16 matmul peak, and peak memory; then batched generation throughput
of the trained checkpoint through phi-eval's hf backend, batch 1 against batch 64.

Offline on the GPU machine: the corpus is its Python's standard library and the tokenizer a
byte-level BPE trained on it (codegen's tokenizer would need the hub). Needs torch,
transformers, accelerate, tokenizers, pyyaml, tqdm (the device image has them).

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_check.py [--steps 200] [--tiny]

`--tiny` runs the same code path on a CPU in a minute (a 2-layer model, a few steps) to
check the script before spending GPU time. Writes $OUT/gpu_check.json (or
benchmarks/out/gpu_check.json).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sysconfig
import tempfile
import time
from pathlib import Path

import torch


def recipe_overrides(steps: int, tiny: bool) -> list[str]:
    common = ["data.stages=null", "data.source=stdlib", "finetune=null", "evaluate=null", "tokenizer.path=null",
              f"training.max_steps={steps}", "training.warmup_steps=20", "training.eval_every=100",
              "training.eval_batches=4", "training.log_every=20", "training.checkpoint_every=100"]
    if tiny:
        return common + ["tokenizer.train={vocab_size: 2048}", "model.layers=2", "model.hidden_size=128",
                         "model.heads=2", "model.intermediate_size=512", "model.vocab_size=null",
                         "training.seq_len=128", "training.batch_size=4", "training.micro_batch_size=2",
                         "training.precision=fp32", "training.warmup_steps=1", "training.checkpoint_every=2"]
    # 16 x 2048 tokens a step, as 2 micro-batches of 8: the accumulation path is exercised too.
    return common + ["tokenizer.train={vocab_size: 32000}", "training.batch_size=16", "training.micro_batch_size=8",
                     "training.precision=bf16"]


def stdlib_prompts(n: int) -> list[str]:
    """Function signatures with their docstrings from the standard library: HumanEval-shaped prompts."""
    prompts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) and node.col_offset == 0:
                docstring = node.body[0]
                prompts.append("\n".join(lines[node.lineno - 1:docstring.end_lineno]) + "\n")
                if len(prompts) == n:
                    return prompts
    return prompts


def generation_throughput(checkpoint: Path, device: str, dtype: str, prompts: list[str], max_new_tokens: int):
    from phi_eval.models.base import GenerationConfig, GenerationRequest
    from phi_eval.models.hf import HFModel

    config = GenerationConfig(max_new_tokens=max_new_tokens, stop=())  # no stop: every row runs to the end
    results = {}
    for batch_size, count in ((1, max(4, len(prompts) // 16)), (64, len(prompts))):
        model = HFModel(str(checkpoint), name="gpu-check", device=device, dtype=dtype, batch_size=batch_size)
        requests = [GenerationRequest(p, config) for p in prompts[:count]]
        list(model.generate(requests[:2], progress=False))  # warm up kernels
        sync()
        start = time.perf_counter()
        done = dict(model.generate(requests, progress=False))
        sync()
        seconds = time.perf_counter() - start
        tokens = sum(c.n_tokens for c in done.values())
        results[f"batch_{batch_size}"] = {"prompts": count, "new_tokens": tokens, "seconds": seconds,
                                          "tokens_per_s": tokens / seconds}
        print(f"generation, batch {batch_size}: {count} prompts, {tokens:,} tokens in {seconds:.1f} s = "
              f"{tokens / seconds:,.0f} tokens/s")
        del model
    return results


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="a CPU dry run of the same code path")
    args = parser.parse_args()
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    steps = 6 if args.tiny and args.steps == 200 else args.steps
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="phi-eval-gpu-check-"))
    os.environ["PHI_EVAL_HOME"] = str(home)

    from phi_eval.paths import PROJECT_ROOT
    from phi_eval.train import load_recipe, train
    from phi_eval.train.flops import peak_flops

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    peak = peak_flops(device, torch.bfloat16 if cuda else torch.float32)
    print(f"measured matmul peak: {peak / 1e12:.3g} TFLOP/s ({'bf16' if cuda else 'fp32'})")

    recipe = load_recipe(PROJECT_ROOT / "recipes" / "phi-1-small.yaml", recipe_overrides(steps, args.tiny))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    checkpoint = train(recipe, out_dir=home / "phi-1-small", progress=True, register=False)
    summary = json.loads((checkpoint / "training_summary.json").read_text())
    memory = torch.cuda.max_memory_allocated() if cuda else None
    log = [json.loads(line) for line in (checkpoint / "train_log.jsonl").read_text().splitlines()]
    steady = [r for r in log if r.get("step", 0) > 20 and "tokens_per_s" in r]  # after warmup and compilation
    print(f"training: {summary['parameters']:,} parameters, {summary['steps']} steps x "
          f"{recipe.training.tokens_per_step:,} tokens, {summary['tokens_per_s']:,.0f} tokens/s overall, "
          f"MFU {summary['mfu']:.1%}; val loss {summary['val_loss_first']:.3f} -> {summary['val_loss_last']:.3f}")
    if steady:
        print(f"steady state (steps > 20): {max(r['tokens_per_s'] for r in steady):,.0f} tokens/s, "
              f"MFU {max(r['mfu'] for r in steady):.1%}")
    if memory is not None:
        print(f"peak GPU memory allocated: {memory / 2**30:.1f} GiB")

    prompts = stdlib_prompts(128 if not args.tiny else 8)
    generation = generation_throughput(checkpoint, "cuda" if cuda else "cpu", "bfloat16" if cuda else "float32",
                                       prompts, max_new_tokens=128 if not args.tiny else 8)
    result = {
        "device": name, "torch": torch.__version__, "peak_flops_per_s": peak, "recipe_overrides":
        recipe_overrides(steps, args.tiny), "training": {k: summary[k] for k in (
            "parameters", "steps", "tokens_seen", "tokens_per_s", "mfu", "model_flops_per_token", "train_time_s",
            "val_loss_first", "val_loss_last", "precision", "accumulation_steps", "micro_batch_size")},
        "steady_tokens_per_s": max((r["tokens_per_s"] for r in steady), default=None),
        "steady_mfu": max((r["mfu"] for r in steady), default=None),
        "peak_memory_bytes": memory, "generation": generation, "wall_s": time.perf_counter() - started,
    }
    out = Path(os.environ.get("OUT") or PROJECT_ROOT / "benchmarks" / "out") / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
