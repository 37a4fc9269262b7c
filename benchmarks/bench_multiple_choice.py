"""Multiple choice: phi-eval's tasks against lm-eval's own run (simple_evaluate with HFLM) on the same model
object, the same docs and the same batch size, over the common-sense suite.

    .venv/bin/python benchmarks/bench_multiple_choice.py [--data-dir ../shared/benchmarks] [--limit 200]
        [--batch-size 32] [--model DIR|SPEC] [--threads N] [--repeats N] [--tasks winogrande,...]

    # a real model with a 262k-token vocabulary (the zoo card; its pip package must be installed):
    .venv/bin/python benchmarks/bench_multiple_choice.py --model gemma-3-270m --tasks piqa --limit 200 --batch-size 16

Both sides use lm-eval's task definitions (phi_eval.tasks.multiple_choice builds them); what is timed is
everything after the data is loaded: building the requests, scoring them and per-item metrics
(phi-eval: task.samples with no cache; lm-eval: simple_evaluate on the built task, which also aggregates,
with bootstrap_iters=0). Checks that every item's prediction and acc / acc_norm are identical, then prints the ratio of
wall time and of process CPU time (steadier on a shared machine with --threads 1) per task and overall;
with --repeats N each side runs N times and the fastest run counts. MMLU has no local copy and is left
out. Default model: a random-weight 4-layer, 256-wide phi with a 4096-token BPE (about 5M parameters),
built here in seconds; --model takes a checkpoint directory or any phi-eval model spec (a zoo card such as
gemma-3-270m, gguf:FILE, hf:DIR), loaded in float32.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from phi_eval.cache import NoCache
from phi_eval.evaluate import RunOptions
from phi_eval.models.hf import HFModel
from phi_eval.steps import EvalContext
from phi_eval.tasks import TASKS, local_data
from phi_eval.tasks.multiple_choice import lm_eval_task

ROOT = Path(__file__).resolve().parents[1]
SUITE = ("winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag", "openbookqa")


def build_model(directory: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import train_tokenizer
    from transformers import PhiConfig, PhiForCausalLM

    tokenizer = train_tokenizer(4096)
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                       num_attention_heads=8, max_position_embeddings=2048, partial_rotary_factor=0.5,
                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.eos_token_id)
    PhiForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load(model: str | None, tmp: Path, batch_size: int) -> HFModel:
    if model and not Path(model).is_dir():
        from phi_eval.models import load_model
        from phi_eval.zoo import parse_model_spec

        from phi_eval.errors import UsageError

        try:
            return load_model(parse_model_spec(model), device="cpu", dtype="float32", batch_size=batch_size)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    directory = model or build_model(tmp / "model")
    return HFModel(str(directory), name="bench", device="cpu", dtype="float32", batch_size=batch_size)


def timed(fn):
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_phi_eval(model: HFModel, name: str, data_dir: Path, limit: int, tmp: Path):
    task = TASKS[name]
    docs = task.load_docs(data_dir)[:limit]
    ctx = EvalContext(RunOptions(out=tmp, data_dir=data_dir, progress=False), NoCache())
    records, wall, cpu = timed(lambda: task.samples(model, docs, ctx))
    return records, task.metrics(records), wall, cpu


def run_lm_eval(model: HFModel, name: str, data_dir: Path, limit: int, batch_size: int):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm_task = lm_eval_task(TASKS[name].lm_eval_name, local_data.load_local(name, data_dir))
    lm = HFLM(pretrained=model.model, tokenizer=model.tokenizer, backend="causal", batch_size=batch_size,
              device=str(model.device))
    out, wall, cpu = timed(lambda: simple_evaluate(model=lm, tasks=[lm_task], limit=limit, log_samples=True,
                                                   bootstrap_iters=0, task_manager=TaskManager(include_defaults=False)))
    samples = {s["doc_id"]: s for s in out["samples"][lm_task.config.task]}
    return samples, out["results"][lm_task.config.task], wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "benchmarks")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="a checkpoint directory or a model spec (default: build the 5M phi)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tasks", default=",".join(SUITE))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        model = load(args.model, Path(tmp), args.batch_size)
        print(f"model: {args.model or 'random 5M phi'} ({model.parameters / 1e6:.1f}M parameters), "
              f"batch size {args.batch_size}, "
              f"{args.limit} items per task, {args.threads} torch threads")
        rows = []
        for name in args.tasks.split(","):
            theirs_wall = theirs_cpu = ours_wall = ours_cpu = float("inf")
            for _ in range(args.repeats):  # alternating, so a burst of load on the machine hits both
                samples, their_metrics, wall, cpu = run_lm_eval(model, name, args.data_dir, args.limit,
                                                                args.batch_size)
                theirs_wall, theirs_cpu = min(theirs_wall, wall), min(theirs_cpu, cpu)
                records, our_metrics, wall, cpu = run_phi_eval(model, name, args.data_dir, args.limit, Path(tmp))
                ours_wall, ours_cpu = min(ours_wall, wall), min(ours_cpu, cpu)
            for record in records:
                sample = samples[int(record["doc_id"])]
                if record["scores"] != {"acc": sample["acc"], "acc_norm": sample["acc_norm"]}:
                    raise SystemExit(f"{name} {record['doc_id']}: phi-eval {record['scores']} != lm-eval's")
            assert our_metrics["acc,none"] == their_metrics["acc,none"]
            assert our_metrics["acc_norm,none"] == their_metrics["acc_norm,none"]
            row = (name, len(records), our_metrics["acc,none"], our_metrics["acc_norm,none"], theirs_wall, ours_wall,
                   theirs_cpu, ours_cpu)
            rows.append(row)
            print(f"{name:14s} n={len(records):4d} acc={row[2]:.4f} acc_norm={row[3]:.4f} (identical)  "
                  f"wall {theirs_wall:6.2f} s / {ours_wall:6.2f} s = {theirs_wall / ours_wall:4.2f}x  "
                  f"cpu {theirs_cpu:6.2f} s / {ours_cpu:6.2f} s = {theirs_cpu / ours_cpu:4.2f}x", flush=True)
    print("\n| task | n | acc | acc_norm | wall: lm-eval HFLM / phi-eval (s) | speed-up | "
          "CPU: lm-eval HFLM / phi-eval (s) | speed-up |\n|---|---|---|---|---|---|---|---|")
    totals = [sum(r[i] for r in rows) for i in (4, 5, 6, 7)]
    for name, n, acc, acc_norm, theirs_wall, ours_wall, theirs_cpu, ours_cpu in rows:
        print(f"| {name} | {n} | {acc:.4f} | {acc_norm:.4f} | {theirs_wall:.2f} / {ours_wall:.2f} | "
              f"{theirs_wall / ours_wall:.2f}x | {theirs_cpu:.2f} / {ours_cpu:.2f} | {theirs_cpu / ours_cpu:.2f}x |")
    print(f"| **all** | {sum(r[1] for r in rows)} | | | {totals[0]:.2f} / {totals[1]:.2f} | "
          f"**{totals[0] / totals[1]:.2f}x** | {totals[2]:.2f} / {totals[3]:.2f} | **{totals[2] / totals[3]:.2f}x** |")


if __name__ == "__main__":
    main()
