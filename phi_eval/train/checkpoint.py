"""Resumable training state: accelerate's save_state (model, optimizer, RNG states) plus
what the loop needs to pick up where it stopped (the step, the sampler's position in the
data, the log so far), in OUT/checkpoints/step-NNNNNNN.

A checkpoint is written under a temporary name and renamed when complete, so a kill
during a save leaves the previous checkpoint as the latest; only the latest is kept.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from phi_eval.errors import UsageError

STATE_FILE = "trainer_state.json"
SAMPLER_FILE = "sampler_state.pt"


def checkpoints_dir(out: Path) -> Path:
    return out / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in checkpoints_dir(out).glob("step-*")
                   if p.suffix != ".partial" and (p / STATE_FILE).is_file())
    return found[-1] if found else None


def save_checkpoint(accelerator, out: Path, step: int, sampler: torch.Generator, state: dict) -> Path:
    """Every process calls this (accelerate shards optimizer state under FSDP/DeepSpeed)."""
    final = checkpoints_dir(out) / f"step-{step:07d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        torch.save(sampler.get_state(), partial / SAMPLER_FILE)
        (partial / STATE_FILE).write_text(json.dumps({"step": step, **state}) + "\n")
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for older in checkpoints_dir(out).glob("step-*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, directory: Path, sampler: torch.Generator, recipe_dict: dict) -> dict:
    """Restore model, optimizer, RNGs and sampler; returns the saved loop state."""
    state = json.loads((directory / STATE_FILE).read_text())
    if state["recipe"] != recipe_dict:
        changed = sorted(differences(state["recipe"], recipe_dict))
        raise UsageError(f"{directory.parent.parent} holds a checkpoint of another recipe ({', '.join(changed)} "
                         "differ); pass --restart to train from scratch, or another --out")
    accelerator.load_state(str(directory))
    sampler.set_state(torch.load(directory / SAMPLER_FILE))
    return state


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = set(a) | set(b)
    out = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out
