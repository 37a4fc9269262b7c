"""Train a recipe end to end: corpus (or data stages) -> tokenizer -> token stream ->
PhiForCausalLM through accelerate -> checkpoint directory -> zoo card -> evaluation.

accelerate runs the same loop on one CPU, one GPU, or many GPUs and nodes (DDP, FSDP,
DeepSpeed: `accelerate launch --config_file recipes/accelerate/ddp.yaml -m phi_eval.cli
train RECIPE`). Every process draws the same global batch of windows from one seeded
sampler and takes its own share, in micro-batches with gradient accumulation, so a
recipe sees the same data whatever the number of devices.

The checkpoint directory holds what `from_pretrained` needs (config, weights,
tokenizer) plus:
    recipe.yaml            the recipe as trained, overrides applied
    train_log.jsonl        one line per logged step: step, tokens, loss (mean since the
                           last line), lr, tokens_per_s, mfu; eval steps add val_loss;
                           the first line is step 0 with the untrained val_loss only
    training_summary.json  parameters, tokens seen, first/last losses, timings, MFU,
                           versions, seed and the corpus manifest
    data_manifest.json     what the model was trained on (corpus or stage manifests)
    checkpoints/           the latest resumable state when training.checkpoint_every is
                           set; rerunning the same recipe into the same directory resumes
    eval/                  results of the recipe's `evaluate:` section, if any
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import accelerate
import tokenizers
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import PhiForCausalLM

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.train.checkpoint import checkpoints_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from phi_eval.train.flops import model_flops_per_token, peak_flops
from phi_eval.train.model import build_model
from phi_eval.train.recipe import TokenizerSpec
from phi_eval.train.tokens import prepare_data, sample_batch, validation_windows

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # recipe name -> accelerate's
MATMUL_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def train(recipe, out_dir=None, progress: bool = True, restart: bool = False, register: bool = True) -> Path:
    """Train `recipe` (from load_recipe) and return the checkpoint directory. With
    training.checkpoint_every set, a rerun into the same directory resumes from the last
    checkpoint (unless `restart`). `register` writes the model's zoo card; the recipe's
    `evaluate:` section then runs on it."""
    out = Path(out_dir) if out_dir is not None else paths.models_dir() / recipe.name
    single = dataclasses.replace(recipe, finetune=None, evaluate=None)
    if recipe.finetune is None:
        summary = train_phase(single, out, progress, restart)
    else:
        base_out = out / "pretrain"
        base = train_phase(single, base_out, progress, restart)
        finetune = dataclasses.replace(single, data=recipe.finetune.data, training=recipe.finetune.training,
                                       tokenizer=TokenizerSpec(path=str(base_out.resolve())))
        summary = train_phase(finetune, out, progress, restart, init_from=base_out)
        if summary is not None:  # the directory describes the whole recipe, both phases
            (out / "recipe.yaml").write_text(recipe_yaml(recipe))
            summary.update(pretrain=base, tokens_seen=base["tokens_seen"] + summary["tokens_seen"],
                           finetune_tokens_seen=summary["tokens_seen"])
            (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary is None:  # not the main process
        return out

    card_name = None
    if register:
        from phi_eval.zoo import register_trained_model

        card = register_trained_model(
            recipe.name, out.resolve(), (out / "recipe.yaml").resolve(), (out / "data_manifest.json").resolve(),
            notes=f"Trained by phi-eval from {recipe.path or 'a recipe'}: {summary['parameters']:,} parameters, "
                  f"{summary['tokens_seen']:,} tokens, final val loss {summary['val_loss_last']:.3f}.")
        card_name = card.stem
        if progress:
            tqdm.write(f"registered zoo card {card_name} ({card})")
    if recipe.evaluate is not None:
        run_evaluation(recipe, out, card_name, progress)
    return out


def recipe_yaml(recipe) -> str:
    return f"# {recipe.name} as trained from {recipe.path}" + "".join(
        f"\n# override: {o}" for o in recipe.overrides) + "\n" + recipe.to_yaml()


@dataclass
class Devices:
    """Where a phase runs (accelerate) and how a step's batch splits over devices and micro-batches."""

    accelerator: Accelerator
    micro: int  # sequences per forward pass on one device
    accumulation: int  # micro-batches per optimizer step on one device
    threads: int

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def count(self) -> int:
        return self.accelerator.num_processes


@dataclass
class StepsDone:
    """What the optimisation loop did, for the training summary."""

    step: int
    stopped_by: str
    log: list
    train_s: float
    resumed_from: list
    flops_per_token: float
    peak: float


def train_phase(recipe, out: Path, progress: bool, restart: bool, init_from: Path | None = None) -> dict | None:
    """One training run into `out` (from `init_from`'s weights, else from scratch); returns
    the training summary on the main process, None on the others."""
    started = time.perf_counter()
    devices = setup_devices(recipe.training)
    if devices.main:
        out.mkdir(parents=True, exist_ok=True)
        if restart and checkpoints_dir(out).exists():
            shutil.rmtree(checkpoints_dir(out))
    with devices.accelerator.main_process_first():  # the data stages run once; the others reuse their output
        tokenizer, train_ids, val_ids, manifest = prepare_data(recipe, progress and devices.main)
    model = PhiForCausalLM.from_pretrained(init_from) if init_from is not None else build_model(recipe.model, tokenizer)
    if len(tokenizer) > model.config.vocab_size:
        raise UsageError(f"model.vocab_size {model.config.vocab_size} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens; raise it or set it to null")
    n_params = sum(p.numel() for p in model.parameters())
    model, optimizer = devices.accelerator.prepare(model, adamw(model, recipe.training))
    model.train()
    done = run_steps(recipe, out, devices, model, optimizer, train_ids, val_ids, progress, restart)

    # Save: weights, config and tokenizer for from_pretrained; then what was done.
    accelerator = devices.accelerator
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(out, state_dict=accelerator.get_state_dict(model), is_main_process=devices.main,
                              save_function=accelerator.save)
    summary = None
    if devices.main:
        tokenizer.save_pretrained(out)
        recipe_text = recipe_yaml(recipe)
        (out / "recipe.yaml").write_text(recipe_text)
        (out / "data_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        summary = training_summary(recipe, recipe_text, devices, done, n_params=n_params, train_tokens=len(train_ids),
                                   vocab_size=len(tokenizer), manifest=manifest, started=started)
        (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    del model, unwrapped, optimizer
    accelerator.free_memory()
    accelerator.wait_for_everyone()  # the others wait until the main process has written the checkpoint
    return summary


def setup_devices(tc) -> Devices:
    accelerator = Accelerator(mixed_precision=PRECISION[tc.precision])
    threads = tc.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    set_seed(tc.seed)
    devices = accelerator.num_processes
    micro = tc.micro_batch_size or tc.batch_size
    if tc.batch_size % (micro * devices):
        raise UsageError(f"training.batch_size {tc.batch_size} is not a multiple of training.micro_batch_size "
                         f"{micro} x {devices} devices; change one of them")
    accumulation = tc.accumulation_steps(devices)
    accelerator.gradient_accumulation_steps = accumulation
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed sizes batches, accumulates and clips itself: tell it the recipe's numbers.
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation,
            train_batch_size=tc.batch_size, gradient_clipping=tc.grad_clip or 0.0)
    return Devices(accelerator, micro, accumulation, threads)


def adamw(model, tc) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]  # biases and norms are not decayed
    return torch.optim.AdamW(
        [{"params": matrices, "weight_decay": tc.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=tc.lr, betas=tuple(tc.betas),
    )


def run_steps(recipe, out: Path, devices: Devices, model, optimizer, train_ids, val_ids, progress: bool,
              restart: bool) -> StepsDone:
    """The optimisation loop, from step 0 or the last checkpoint of this same recipe; logs to
    train_log.jsonl and checkpoints as the recipe asks."""
    tc, accelerator, main = recipe.training, devices.accelerator, devices.main
    flops_per_token = model_flops_per_token(accelerator.unwrap_model(model).config, tc.seq_len)
    peak = peak_flops(accelerator.device, MATMUL_DTYPE[tc.precision]) * devices.count
    val_batches = [b.to(accelerator.device) for b in validation_windows(val_ids, tc).split(devices.micro)]
    sampler = torch.Generator().manual_seed(tc.seed)
    total_steps = tc.total_steps
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    log_path = out / "train_log.jsonl"
    identity = resume_identity(recipe)

    state = {"log": [], "train_s": 0.0, "interval_losses": [], "interval_s": 0.0, "resumed_from": []}
    checkpoint = None if restart else latest_checkpoint(out)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, sampler, identity)
        state["resumed_from"].append(state["step"])
        if progress and main:
            tqdm.write(f"resuming {recipe.name} from {checkpoint} (step {state['step']})")
    start_step = state.get("step", 0)
    log = state["log"]
    if main:  # the log as it was at the checkpoint; steps after it are redone
        log_path.write_text("".join(json.dumps(r) + "\n" for r in log))

    def write(record):
        log.append(record)
        if main:
            with log_path.open("a") as f:  # a line at a time, so the log can be watched live
                f.write(json.dumps(record) + "\n")

    if start_step == 0:
        write({"step": 0, "tokens": 0, "val_loss": validation_loss(model, val_batches)})
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train {recipe.name}", unit="step",
               disable=not (progress and main))
    # The time budget counts the loop's time across resumptions.
    loop_start = time.perf_counter() - state["train_s"]
    train_s, interval_s = state["train_s"], state["interval_s"]
    interval_losses = list(state["interval_losses"])
    stopped_by = "max_steps" if tc.max_steps is not None else "max_tokens"
    rank, share = accelerator.process_index, tc.batch_size // devices.count
    step = start_step
    for step in range(start_step + 1, total_steps + 1):
        t = time.perf_counter()
        # On a slow or busy machine the time budget binds first; the decay follows it then.
        lr = lr_at(step - 1, tc, total_steps, time_used=(t - loop_start) / budget_s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_batch(train_ids, tc.batch_size, tc.seq_len, sampler)[rank * share:(rank + 1) * share]
        interval_losses.append(optimizer_step(batch, devices, model, optimizer, tc.grad_clip))
        dt = time.perf_counter() - t
        train_s += dt
        interval_s += dt
        bar.update()

        out_of_time = time.perf_counter() - loop_start >= budget_s
        last = step == total_steps or out_of_time
        if step == 1 or step % tc.log_every == 0 or step % tc.eval_every == 0 or last:
            tokens_per_s = len(interval_losses) * tc.tokens_per_step / interval_s
            record = {
                "step": step,
                "tokens": step * tc.tokens_per_step,
                "loss": sum(interval_losses) / len(interval_losses),
                "lr": lr,
                "tokens_per_s": tokens_per_s,
                "mfu": tokens_per_s * flops_per_token / peak,
            }
            if step % tc.eval_every == 0 or last:
                record["val_loss"] = validation_loss(model, val_batches)
                if progress and main:
                    tqdm.write(f"step {step}: loss {record['loss']:.3f}, val_loss {record['val_loss']:.3f}")
            write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens_per_s:.0f}", mfu=f"{record['mfu']:.1%}")
            interval_losses, interval_s = [], 0.0
        if tc.checkpoint_every and (step % tc.checkpoint_every == 0 or last):
            save_checkpoint(accelerator, out, step, sampler, {
                "recipe": identity, "log": log, "train_s": train_s, "interval_losses": interval_losses,
                "interval_s": interval_s, "resumed_from": state["resumed_from"]})
        if out_of_time:
            stopped_by = "max_minutes"
            break
    bar.close()
    return StepsDone(step, stopped_by, log, train_s, state["resumed_from"], flops_per_token, peak)


def optimizer_step(batch, devices: Devices, model, optimizer, grad_clip: float | None) -> float:
    """One step over a batch in micro-batches; returns its mean loss (over all devices)."""
    accelerator = devices.accelerator
    step_loss = 0.0
    for chunk in batch.split(devices.micro):
        # accelerate's accumulation: gradients sync across devices, and the optimizer steps
        # (DeepSpeed's engine included), only on the last micro-batch of the step; backward
        # divides the loss by the accumulation steps.
        with accelerator.accumulate(model):
            chunk = chunk.to(accelerator.device)
            loss = model(input_ids=chunk, labels=chunk).loss  # the model shifts labels itself
            accelerator.backward(loss)
            step_loss += loss.detach() / devices.accumulation
            if accelerator.sync_gradients and grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if devices.count > 1:
        step_loss = accelerator.reduce(step_loss, reduction="mean")
    return float(step_loss)


def training_summary(recipe, recipe_text: str, devices: Devices, done: StepsDone, *, n_params: int,
                     train_tokens: int, vocab_size: int, manifest: dict, started: float) -> dict:
    tc = recipe.training
    losses = [r for r in done.log if "loss" in r]
    evals = [r for r in done.log if "val_loss" in r]
    tokens_seen = done.step * tc.tokens_per_step
    train_s = done.train_s
    return {
        "recipe": recipe.name,
        "recipe_sha256": hashlib.sha256(recipe_text.encode()).hexdigest(),
        "overrides": list(recipe.overrides),
        "parameters": n_params,
        "steps": done.step,
        "stopped_by": done.stopped_by,
        "resumed_from_steps": done.resumed_from,
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / train_tokens,
        "train_loss_first": losses[0]["loss"],
        "train_loss_last": losses[-1]["loss"],
        "val_loss_first": evals[0]["val_loss"],
        "val_loss_last": evals[-1]["val_loss"],
        "train_time_s": train_s,  # optimisation steps only
        "wall_time_s": time.perf_counter() - started,  # this process: corpus to saved checkpoint
        "tokens_per_s": tokens_seen / train_s if train_s else None,
        "model_flops_per_token": done.flops_per_token,
        "peak_flops_per_s": done.peak,  # measured matmul peak x devices (phi_eval/train/flops.py)
        "mfu": tokens_seen * done.flops_per_token / train_s / done.peak if train_s else None,
        "seed": tc.seed,
        "device": str(devices.accelerator.device),
        "devices": devices.count,
        "distributed": str(devices.accelerator.distributed_type),
        "micro_batch_size": devices.micro,
        "accumulation_steps": devices.accumulation,
        "threads": devices.threads,
        "precision": tc.precision,
        "vocab_size": vocab_size,
        "corpus": {k: v for k, v in manifest.items() if k != "stages"},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }


def resume_identity(recipe) -> dict:
    """What must not change between a checkpoint and its resumption: everything that shapes
    the numbers (not where or how often checkpoints go, nor the evaluation afterwards)."""
    identity = recipe.to_dict()
    identity.pop("evaluate", None)
    identity["training"].pop("checkpoint_every", None)
    return identity


def run_evaluation(recipe, out: Path, card_name: str | None, progress: bool) -> list:
    """The recipe's `evaluate:` section: phi-eval's harness on the checkpoint, in process."""
    from phi_eval.evaluate import RunOptions, run
    from phi_eval.tasks import resolve_tasks
    from phi_eval.zoo import parse_model_spec

    ev = recipe.evaluate
    spec = parse_model_spec(card_name if card_name else f"hf:{out.resolve()}")
    options = RunOptions(
        out=Path(ev.out) if ev.out else out / "eval", limit=ev.limit, n_samples=ev.n_samples,
        temperature=ev.temperature, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size,
        data_dir=Path(ev.data_dir) if ev.data_dir else None, seed=ev.seed, progress=progress,
    )
    results = run([spec], resolve_tasks(",".join(ev.tasks)), options, argv=["phi-eval", "train", recipe.path])
    for result in results:
        if progress:
            tqdm.write(f"evaluated {spec.name}: {result.headline()} ({result.path})")
    return results


def lr_at(step: int, tc, total_steps: int, time_used: float = 0.0) -> float:
    """Linear warmup to tc.lr, then constant, or cosine or linear decay that reaches tc.min_lr
    at the last step, or when `time_used` (the share of max_minutes spent) reaches 1, if sooner."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, total_steps - 1 - tc.warmup_steps)
    progress = min(1.0, max(progress, time_used))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if tc.schedule == "cosine" else 1 - progress
    return tc.min_lr + decay * (tc.lr - tc.min_lr)


@torch.no_grad()
def validation_loss(model, batches) -> float:
    """Mean loss per sequence over fixed validation batches, with dropout off."""
    model.eval()
    total = sum(model(input_ids=b, labels=b).loss.item() * len(b) for b in batches)
    model.train()
    return total / sum(len(b) for b in batches)
