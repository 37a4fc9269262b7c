"""Train a recipe end to end: corpus -> tokenizer -> token stream -> PhiForCausalLM ->
checkpoint directory.

The checkpoint directory holds what `from_pretrained` needs (config, weights,
tokenizer) plus:
    recipe.yaml            the recipe as trained, overrides applied
    train_log.jsonl        one line per logged step: step, tokens, loss (mean since the
                           last line), lr, tokens_per_s; eval steps add val_loss; the
                           first line is step 0 with the untrained val_loss only
    training_summary.json  parameters, tokens seen, first/last losses, timings,
                           versions, seed and the corpus manifest
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import accelerate
import tokenizers
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.train.corpus import collect_corpus
from phi_eval.train.model import build_model
from phi_eval.train.tokenizer import encode_documents, load_tokenizer, train_bpe

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # recipe name -> accelerate's


def train(recipe, out_dir=None, progress: bool = True) -> Path:
    """Train `recipe` (from load_recipe) and return the checkpoint directory."""
    started = time.perf_counter()
    tc = recipe.training
    out = Path(out_dir) if out_dir is not None else paths.models_dir() / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    threads = tc.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    set_seed(tc.seed)

    tokenizer, train_ids, val_ids, manifest = prepare_data(recipe)

    # Model and optimiser; accelerate puts them on the GPU when there is one.
    accelerator = Accelerator(mixed_precision=PRECISION[tc.precision])
    model = build_model(recipe.model, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]  # biases and norms are not decayed
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": tc.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=tc.lr, betas=tuple(tc.betas),
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    val_batches = [b.to(accelerator.device) for b in validation_windows(val_ids, tc).split(tc.batch_size)]
    sampler = torch.Generator().manual_seed(tc.seed)

    total_steps = tc.total_steps
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    log_path = out / "train_log.jsonl"
    log_path.write_text("")
    log = []

    def write(record):
        log.append(record)
        with log_path.open("a") as f:  # a line at a time, so the log can be watched live
            f.write(json.dumps(record) + "\n")

    write({"step": 0, "tokens": 0, "val_loss": evaluate(model, val_batches)})
    bar = tqdm(total=total_steps, desc=f"train {recipe.name}", unit="step", disable=not progress)
    loop_start = time.perf_counter()
    train_s = interval_s = 0.0
    interval_losses = []
    stopped_by = "max_steps" if tc.max_steps is not None else "max_tokens"
    for step in range(1, total_steps + 1):
        t = time.perf_counter()
        # On a slow or busy machine the time budget binds first; the decay follows it then.
        lr = lr_at(step - 1, tc, total_steps, time_used=(t - loop_start) / budget_s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_batch(train_ids, tc.batch_size, tc.seq_len, sampler).to(accelerator.device)
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts labels itself
        accelerator.backward(loss)
        if tc.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        interval_losses.append(loss.item())
        dt = time.perf_counter() - t
        train_s += dt
        interval_s += dt
        bar.update()

        out_of_time = time.perf_counter() - loop_start >= budget_s
        last = step == total_steps or out_of_time
        if step == 1 or step % tc.log_every == 0 or step % tc.eval_every == 0 or last:
            record = {
                "step": step,
                "tokens": step * tc.tokens_per_step,
                "loss": sum(interval_losses) / len(interval_losses),
                "lr": lr,
                "tokens_per_s": len(interval_losses) * tc.tokens_per_step / interval_s,
            }
            if step % tc.eval_every == 0 or last:
                record["val_loss"] = evaluate(model, val_batches)
                if progress:
                    tqdm.write(f"step {step}: loss {record['loss']:.3f}, val_loss {record['val_loss']:.3f}")
            write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            interval_losses, interval_s = [], 0.0
        if out_of_time:
            stopped_by = "max_minutes"
            break
    bar.close()

    # Save: weights, config and tokenizer for from_pretrained; then what was done.
    model = accelerator.unwrap_model(model)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    recipe_text = f"# {recipe.name} as trained from {recipe.path}" + "".join(
        f"\n# override: {o}" for o in recipe.overrides) + "\n" + recipe.to_yaml()
    (out / "recipe.yaml").write_text(recipe_text)
    losses = [r for r in log if "loss" in r]
    evals = [r for r in log if "val_loss" in r]
    tokens_seen = step * tc.tokens_per_step
    summary = {
        "recipe": recipe.name,
        "recipe_sha256": hashlib.sha256(recipe_text.encode()).hexdigest(),
        "overrides": list(recipe.overrides),
        "parameters": n_params,
        "steps": step,
        "stopped_by": stopped_by,
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / len(train_ids),
        "train_loss_first": losses[0]["loss"],
        "train_loss_last": losses[-1]["loss"],
        "val_loss_first": evals[0]["val_loss"],
        "val_loss_last": evals[-1]["val_loss"],
        "train_time_s": train_s,  # optimisation steps only
        "wall_time_s": time.perf_counter() - started,  # everything, corpus to saved checkpoint
        "tokens_per_s": tokens_seen / train_s,
        "seed": tc.seed,
        "device": str(accelerator.device),
        "threads": threads,
        "precision": tc.precision,
        "vocab_size": len(tokenizer),
        "corpus": manifest,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


def prepare_data(recipe):
    """Files -> tokenizer (trained on the training split only) -> two token streams."""
    tc = recipe.training
    corpus = collect_corpus(recipe.data)
    if recipe.tokenizer.train is not None:
        tokenizer = train_bpe(corpus.train, recipe.tokenizer.train.vocab_size, recipe.model.context_length)
    else:
        tokenizer = load_tokenizer(recipe.tokenizer.path)
    train_ids = torch.from_numpy(encode_documents(tokenizer, corpus.train))
    val_ids = torch.from_numpy(encode_documents(tokenizer, corpus.val))
    for split, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < tc.seq_len:
            raise UsageError(f"data: the {split} split has {len(ids)} tokens, fewer than training.seq_len "
                             f"({tc.seq_len}); add files or lower training.seq_len")
    manifest = {**corpus.manifest, "tokens": len(train_ids) + len(val_ids), "val_tokens": len(val_ids)}
    return tokenizer, train_ids, val_ids, manifest


def validation_windows(val_ids: torch.Tensor, tc) -> torch.Tensor:
    """The same sequences at every evaluation, so val losses compare across steps; spread
    evenly over the split so that no single held-out file dominates."""
    n = min(tc.eval_batches * tc.batch_size, len(val_ids) // tc.seq_len)
    starts = torch.linspace(0, len(val_ids) - tc.seq_len, n).long().tolist()
    return torch.stack([val_ids[s : s + tc.seq_len] for s in starts])


def lr_at(step: int, tc, total_steps: int, time_used: float = 0.0) -> float:
    """Linear warmup to tc.lr, then cosine or linear decay that reaches tc.min_lr at the
    last step, or when `time_used` (the share of max_minutes spent) reaches 1, if sooner."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, total_steps - 1 - tc.warmup_steps)
    progress = min(1.0, max(progress, time_used))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if tc.schedule == "cosine" else 1 - progress
    return tc.min_lr + decay * (tc.lr - tc.min_lr)


def sample_batch(ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of `seq_len` tokens at random offsets (nanoGPT-style)."""
    starts = torch.randint(0, len(ids) - seq_len + 1, (batch_size,), generator=generator)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def evaluate(model, batches) -> float:
    """Mean loss per sequence over fixed validation batches, with dropout off."""
    model.eval()
    total = sum(model(input_ids=b, labels=b).loss.item() * len(b) for b in batches)
    model.train()
    return total / sum(len(b) for b in batches)
