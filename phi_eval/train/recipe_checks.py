"""A recipe's cross-field and range checks, after phi_eval.schema has checked keys and types."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from phi_eval.errors import UsageError

if TYPE_CHECKING:
    from phi_eval.train.recipe import ArchitectureSpec, DataSpec, EvaluateSpec, Recipe, TrainingSpec


class RecipeChecker:
    """Names the field at fault, and the override to fix where an override set it."""

    def __init__(self, path: Path, overridden: dict[str, str]):
        self.path = path
        self.overridden = overridden

    def fail(self, field_name: str, problem: str):
        related = [item for key, item in self.overridden.items()
                   if key == field_name or key.startswith(field_name + ".") or field_name.startswith(key + ".")]
        fix = f"fix the override {related[0]!r}" if related else "fix the recipe"
        raise UsageError(f"{self.path}: {field_name} {problem}; {fix}")

    def validate(self, r: Recipe):
        """Cross-field and range checks, after types are right."""
        fail = self.fail
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.name):
            fail("name", f"must be a folder-safe name of letters, digits, '.', '_', '-' (got {r.name!r})")

        m = r.model
        for key in ("layers", "hidden_size", "heads", "rotary_dim", "context_length"):
            if getattr(m, key) < 1:
                fail(f"model.{key}", f"must be at least 1 (got {getattr(m, key)})")
        if m.hidden_size % m.heads:
            fail("model.heads", f"must divide model.hidden_size (got {m.heads} and {m.hidden_size})")
        # transformers rotates head_dim * partial_rotary_factor dims, in pairs.
        if m.rotary_dim % 2 or m.rotary_dim > m.head_dim:
            fail("model.rotary_dim", f"must be even and at most the head dim {m.head_dim} (got {m.rotary_dim})")
        for key in ("intermediate_size", "vocab_size"):
            if getattr(m, key) is not None and getattr(m, key) < 1:
                fail(f"model.{key}", f"must be at least 1 (got {getattr(m, key)})")
        if not 0 <= m.dropout < 1:
            fail("model.dropout", f"must be in [0, 1) (got {m.dropout})")

        t = r.tokenizer
        if t.train is None and t.path is None:
            fail("tokenizer", "needs train: {vocab_size: N} or path: DIR_OR_HUB_ID")
        if t.train is not None and t.path is not None:
            fail("tokenizer.path", "and tokenizer.train are both set; set one of them to null")
        if t.train is not None and t.train.vocab_size < 258:
            # 256 byte tokens and <|endoftext|> come first; merges need room after them.
            fail("tokenizer.train.vocab_size", f"must be at least 258 (got {t.train.vocab_size})")

        self.validate_data(r.data, "data")
        self.validate_training(r.training, m, "training")
        if r.finetune is not None:
            self.validate_data(r.finetune.data, "finetune.data")
            self.validate_training(r.finetune.training, m, "finetune.training")

        if r.evaluate is not None:
            self.validate_evaluate(r.evaluate)

    def validate_data(self, d: DataSpec, where: str):
        fail = self.fail
        if d.source is not None and d.stages is not None:
            fail(f"{where}.stages", f"and {where}.source are both set; set one of them to null")
        if isinstance(d.source, str) and d.source != "stdlib":
            fail(f"{where}.source", f"must be 'stdlib' or a list of directories and JSONL files (got {d.source!r})")
        if isinstance(d.source, list):
            if not d.source:
                fail(f"{where}.source", "must list at least one directory or JSONL file")
            for entry in d.source:
                if not (Path(entry).is_dir() or (entry.endswith(".jsonl") and Path(entry).is_file())):
                    fail(f"{where}.source", f"lists {entry!r}, which is neither a directory nor a JSONL file")
        if d.stages is not None:
            self.validate_stages(d.stages, f"{where}.stages")
        if d.max_bytes is not None and d.max_bytes < 1:
            fail(f"{where}.max_bytes", f"must be at least 1 (got {d.max_bytes})")
        if not 0 < d.val_fraction < 1:
            fail(f"{where}.val_fraction", f"must be between 0 and 1 (got {d.val_fraction})")

    def validate_training(self, tr: TrainingSpec, m: ArchitectureSpec, where: str):
        fail = self.fail
        for key in ("seq_len", "batch_size", "eval_every", "eval_batches", "log_every"):
            if getattr(tr, key) < 1:
                fail(f"{where}.{key}", f"must be at least 1 (got {getattr(tr, key)})")
        if tr.seq_len > m.context_length:
            fail(f"{where}.seq_len", f"must be at most model.context_length (got {tr.seq_len} > {m.context_length})")
        if tr.max_steps is None and tr.max_tokens is None:
            fail(f"{where}.max_steps", f"or {where}.max_tokens must be set")
        if tr.max_steps is not None and tr.max_tokens is not None:
            fail(f"{where}.max_tokens", f"and {where}.max_steps are both set; set one of them to null")
        for key in ("max_steps", "max_tokens", "threads"):
            value = getattr(tr, key)
            if value is not None and value < 1:
                fail(f"{where}.{key}", f"must be at least 1 (got {value})")
        if tr.max_minutes is not None and tr.max_minutes <= 0:
            fail(f"{where}.max_minutes", f"must be positive (got {tr.max_minutes})")
        if tr.lr <= 0:
            fail(f"{where}.lr", f"must be positive (got {tr.lr})")
        if not 0 <= tr.min_lr <= tr.lr:
            fail(f"{where}.min_lr", f"must be between 0 and {where}.lr (got {tr.min_lr})")
        if tr.warmup_steps < 0:
            fail(f"{where}.warmup_steps", f"must be 0 or more (got {tr.warmup_steps})")
        if tr.schedule not in ("cosine", "linear", "constant"):
            fail(f"{where}.schedule", f"must be cosine, linear or constant (got {tr.schedule!r})")
        if len(tr.betas) != 2 or not all(0 <= b < 1 for b in tr.betas):
            fail(f"{where}.betas", f"must be two numbers in [0, 1) (got {tr.betas})")
        if tr.weight_decay < 0:
            fail(f"{where}.weight_decay", f"must be 0 or more (got {tr.weight_decay})")
        if tr.grad_clip is not None and tr.grad_clip <= 0:
            fail(f"{where}.grad_clip", f"must be positive, or null for no clipping (got {tr.grad_clip})")
        if tr.precision not in ("fp32", "bf16", "fp16"):
            fail(f"{where}.precision", f"must be fp32, bf16 or fp16 (got {tr.precision!r})")
        if tr.micro_batch_size is not None:
            if tr.micro_batch_size < 1:
                fail(f"{where}.micro_batch_size", f"must be at least 1 (got {tr.micro_batch_size})")
            if tr.batch_size % tr.micro_batch_size:
                fail(f"{where}.micro_batch_size", f"must divide {where}.batch_size "
                     f"(got {tr.micro_batch_size} and {tr.batch_size})")
        if tr.checkpoint_every is not None and tr.checkpoint_every < 1:
            fail(f"{where}.checkpoint_every", f"must be at least 1, or null for none (got {tr.checkpoint_every})")

    def validate_stages(self, stages: list[dict], where: str):
        if not stages:
            self.fail(where, "must list at least one stage")
        try:
            from phi_eval.data.pipeline import validate_stages
        except ImportError:
            self.fail(where, "needs phi_eval.data.pipeline, which this installation lacks; "
                      "use data.source instead")
        try:
            validate_stages(stages, where=where)
        except UsageError as e:  # it names the field (data.stages[2].keep_fraction); add the file
            raise UsageError(f"{self.path}: {e}") from None

    def validate_evaluate(self, ev: EvaluateSpec):
        from phi_eval.tasks import resolve_tasks  # light: task modules load their data lazily

        if not ev.tasks:
            self.fail("evaluate.tasks", "must list at least one task, e.g. [humaneval]")
        try:
            resolve_tasks(",".join(ev.tasks))
        except UsageError as e:
            self.fail("evaluate.tasks", f"names a task phi-eval lacks ({e})")
        for key in ("limit", "n_samples", "max_new_tokens"):
            value = getattr(ev, key)
            if value is not None and value < 1:
                self.fail(f"evaluate.{key}", f"must be at least 1 (got {value})")
        if ev.temperature < 0:
            self.fail("evaluate.temperature", f"must be 0 (greedy) or more (got {ev.temperature})")
        if not 0 < ev.top_p <= 1:
            self.fail("evaluate.top_p", f"must be in (0, 1] (got {ev.top_p})")
        if isinstance(ev.batch_size, str) and ev.batch_size != "auto":
            self.fail("evaluate.batch_size", f"must be an integer or auto (got {ev.batch_size!r})")
        if isinstance(ev.batch_size, int) and ev.batch_size < 1:
            self.fail("evaluate.batch_size", f"must be at least 1 (got {ev.batch_size})")
        if ev.data_dir is not None and not Path(ev.data_dir).is_dir():
            self.fail("evaluate.data_dir", f"is {ev.data_dir!r}, which is not a directory")
