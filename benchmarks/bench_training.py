"""Training throughput on this machine: phi-eval's loop (accelerate) against transformers'
Trainer, the usual peer, on the same model, the same token windows, the same optimizer
settings; tokens/s and MFU against this machine's matmul peak, measured in the same run.

    .venv/bin/python benchmarks/bench_training.py [--recipe recipes/phi-tiny.yaml] [--steps 40] [--rounds 2]

The two alternate for --rounds rounds (a busy machine slows both alike); the best round of
each is reported. Writes benchmarks/out/bench_training.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from phi_eval.paths import PROJECT_ROOT
from phi_eval.train import load_recipe, train
from phi_eval.train.flops import model_flops_per_token, peak_flops
from phi_eval.train.tokens import prepare_data, sample_batch
from phi_eval.train.model import build_model


def phi_eval_round(recipe, out: Path) -> float:
    """tokens/s of the optimisation steps, as training_summary.json reports it."""
    checkpoint = train(recipe, out_dir=out, progress=False, restart=True, register=False)
    return json.loads((checkpoint / "training_summary.json").read_text())["tokens_per_s"]


def trainer_round(recipe, tokenizer, windows: torch.Tensor, out: Path) -> float:
    """The same windows through transformers' Trainer: AdamW, linear schedule, clipping 1.0."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    tc = recipe.training
    torch.manual_seed(tc.seed)
    model = build_model(recipe.model, tokenizer)
    dataset = Dataset.from_dict({"input_ids": windows.tolist(), "labels": windows.tolist()}).with_format("torch")
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=tc.batch_size, max_steps=tc.total_steps,
        learning_rate=tc.lr, warmup_steps=tc.warmup_steps, lr_scheduler_type="linear", weight_decay=tc.weight_decay,
        adam_beta1=tc.betas[0], adam_beta2=tc.betas[1], max_grad_norm=tc.grad_clip, logging_steps=10**6,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        seed=tc.seed,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    start = time.perf_counter()
    trainer.train()
    return tc.total_steps * tc.tokens_per_step / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=PROJECT_ROOT / "recipes" / "phi-tiny.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, [f"training.max_steps={args.steps}", "training.max_minutes=null",
                                       "training.eval_every=1000000", "training.eval_batches=1",
                                       "training.checkpoint_every=null"])
    torch.set_num_threads(recipe.training.threads or len(os.sched_getaffinity(0)))
    peak = peak_flops(torch.device("cpu"), torch.float32, refresh=True)  # the best measurement so far
    tokenizer, train_ids, _, _ = prepare_data(recipe)
    model_config = build_model(recipe.model, tokenizer).config
    flops_per_token = model_flops_per_token(model_config, recipe.training.seq_len)
    generator = torch.Generator().manual_seed(recipe.training.seed)
    windows = torch.cat([sample_batch(train_ids, recipe.training.batch_size, recipe.training.seq_len, generator)
                         for _ in range(recipe.training.total_steps)])

    rounds = {"phi-eval": [], "transformers Trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            rounds["phi-eval"].append(phi_eval_round(recipe, Path(tmp) / "phi-eval"))
            rounds["transformers Trainer"].append(trainer_round(recipe, tokenizer, windows, Path(tmp) / "trainer"))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tokens/s" for k, v in rounds.items()))
    best = {k: max(v) for k, v in rounds.items()}
    result = {
        "recipe": str(args.recipe), "steps": args.steps, "tokens_per_step": recipe.training.tokens_per_step,
        "parameters": sum(p.numel() for p in build_model(recipe.model, tokenizer).parameters()),
        "model_flops_per_token": flops_per_token, "peak_flops_per_s": peak, "threads": torch.get_num_threads(),
        "rounds": rounds, "best_tokens_per_s": best, "mfu": {k: v * flops_per_token / peak for k, v in best.items()},
        "ratio_phi_eval_to_trainer": best["phi-eval"] / best["transformers Trainer"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average": os.getloadavg(),
    }
    out = PROJECT_ROOT / "benchmarks" / "out" / "bench_training.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak (fp32 matmul, {result['threads']} threads): {peak / 1e9:.1f} GFLOP/s; "
          f"model FLOPs/token {flops_per_token / 1e6:.2f} M")
    for name, value in best.items():
        print(f"{name}: {value:,.0f} tokens/s, MFU {result['mfu'][name]:.1%}")
    print(f"ratio phi-eval / Trainer: {result['ratio_phi_eval_to_trainer']:.2f}; load average {result['load_average']}")


if __name__ == "__main__":
    main()
