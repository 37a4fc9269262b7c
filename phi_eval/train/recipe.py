"""Training recipes: the YAML schema, its validation, and `key=value` overrides.

A recipe is one YAML file. Every key it may hold is listed below with its default;
an unknown key is an error, so a typo never falls back to a default silently.
Floats may be written `1e-3` (YAML would otherwise read that as a string).

    name: phi-tiny             # checkpoint folder name; default: the file's stem
    model:                     # transformers' PhiForCausalLM (PhiConfig)
      layers: 4                # num_hidden_layers
      hidden_size: 128
      heads: 4                 # attention heads (= KV heads); must divide hidden_size
      rotary_dim: 16           # rotary dims per head (partial rotary); even, <= head dim
      context_length: 256      # max_position_embeddings
      intermediate_size: null  # MLP inner size; null = 4 * hidden_size
      dropout: 0.0             # attention and residual dropout
      rope_theta: 10000.0
    tokenizer:                 # exactly one of:
      train:                   #   train a byte-level BPE on the training split
        vocab_size: 4096       #     including the one special token <|endoftext|>
      path: null               #   or load a local tokenizer dir / hub id
    data:
      source: stdlib           # "stdlib" (this Python's standard library) or a list of
                               # directories; *.py files, test dirs left out (corpus.py)
      skip_generated: true     # leave out files whose first 5 lines say "generated"
      max_bytes: null          # cap on the corpus size; files picked by path hash
      val_fraction: 0.05       # held-out files, picked by path hash
    training:
      seq_len: 256             # tokens per sequence; <= model.context_length
      batch_size: 16           # sequences per step
      max_steps: null          # exactly one of max_steps / max_tokens
      max_tokens: null         #   (max_tokens = max_steps * batch_size * seq_len)
      max_minutes: null        # also stop when the training loop has run this long; the
                               # lr decay then follows the clock (not reproducible)
      lr: 1e-3                 # peak learning rate (AdamW)
      min_lr: 0.0              # where the decay ends
      warmup_steps: 0          # linear warmup from 0 to lr
      schedule: cosine         # decay after warmup: cosine | linear
      betas: [0.9, 0.95]       # AdamW betas
      weight_decay: 0.1        # on matrices only, not on biases / norms
      grad_clip: 1.0           # max gradient norm; null = no clipping
      seed: 0
      eval_every: 100          # steps between validation losses (also at start and end)
      eval_batches: 8          # validation batches per evaluation (fixed sequences)
      log_every: 10            # steps between train_log.jsonl lines
      threads: null            # CPU threads; null = all cores available to the process
      precision: fp32          # fp32 | bf16 | fp16 (accelerate mixed precision)

Overrides are `section.key=value` strings with the value read as YAML, e.g.
`training.max_steps=10`, `training.lr=3e-4`, `data.source=[./src]`,
`tokenizer.train.vocab_size=1024`. Relative directories resolve against the
current directory.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from phi_eval.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    layers: int = 4
    hidden_size: int = 128
    heads: int = 4
    rotary_dim: int = 16
    context_length: int = 256
    intermediate_size: int | None = None
    dropout: float = 0.0
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size


@dataclass(frozen=True)
class TokenizerTraining:
    vocab_size: int = 4096


@dataclass(frozen=True)
class TokenizerSpec:
    train: TokenizerTraining | None = None
    path: str | None = None


@dataclass(frozen=True)
class DataSpec:
    source: str | list[str] = "stdlib"
    skip_generated: bool = True
    max_bytes: int | None = None
    val_fraction: float = 0.05


@dataclass(frozen=True)
class TrainingSpec:
    seq_len: int = 256
    batch_size: int = 16
    max_steps: int | None = None
    max_tokens: int | None = None
    max_minutes: float | None = None
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    threads: int | None = None
    precision: str = "fp32"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_tokens // self.tokens_per_step)  # ceiling division


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    # Where the recipe came from; not part of the schema.
    path: str = field(default="", metadata={"internal": True})
    overrides: tuple[str, ...] = field(default=(), metadata={"internal": True})

    def to_dict(self) -> dict:
        """The schema part, as it would be written in a YAML file."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                del out[f.name]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_recipe(path, overrides=()) -> Recipe:
    """Read, override and validate a recipe; bad input raises a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such recipe file; check the path")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}: not valid YAML{where}; fix the recipe") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a recipe is a mapping of sections (name, model, ...); fix the recipe")
    raw.setdefault("name", path.stem)

    overridden = {}
    for item in overrides:
        key, value = _parse_override(path, item)
        _set_nested(path, raw, key, value, item)
        overridden[key] = item

    checker = _Checker(path, overridden)
    recipe = checker.build(Recipe, raw, "")
    checker.validate(recipe)
    if isinstance(recipe.data.source, list):  # so the checkpoint's recipe.yaml works from anywhere
        absolute = [str(Path(p).resolve()) for p in recipe.data.source]
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, source=absolute))
    return dataclasses.replace(recipe, path=str(path), overrides=tuple(overrides))


def _parse_override(path, item: str):
    key, sep, text = item.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key.strip()):
        raise UsageError(f"{path}: override {item!r} is not key=value; write e.g. training.max_steps=10")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text  # let the type check name the field
    return key.strip(), value


def _set_nested(path, raw: dict, key: str, value, item: str):
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parents[: i + 1])
            raise UsageError(f"{path}: {where} is not a section, so override {item!r} cannot set it; fix the override")
        node = child
    node[leaf] = value


def _describe(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(hint):
        return "a section (a mapping)"
    return " or ".join(_describe(a) for a in typing.get_args(hint) if a is not type(None))


class _Checker:
    """Builds the dataclasses from raw YAML and checks them, naming the field at fault."""

    def __init__(self, path: Path, overridden: dict[str, str]):
        self.path = path
        self.overridden = overridden

    def fail(self, field_name: str, problem: str):
        related = [item for key, item in self.overridden.items()
                   if key == field_name or key.startswith(field_name + ".") or field_name.startswith(key + ".")]
        fix = f"fix the override {related[0]!r}" if related else "fix the recipe"
        raise UsageError(f"{self.path}: {field_name} {problem}; {fix}")

    def build(self, cls, raw, prefix: str):
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        where = prefix.rstrip(".") or "the recipe"
        for key in raw:
            if key not in fields:
                known = ", ".join(fields)
                self.fail(f"{prefix}{key}", f"is not a known key of {where} (known: {known})")
        missing = [k for k, f in fields.items() if k not in raw and _is_required(f)]
        if missing:
            self.fail(f"{prefix}{missing[0]}", "is required")
        values = {k: self.coerce(raw[k], hints[k], f"{prefix}{k}") for k in raw}
        return cls(**values)

    def coerce(self, value, hint, name: str):
        options = typing.get_args(hint) if _is_union(hint) else (hint,)
        if value is None:
            if type(None) in options:
                return None
            self.fail(name, f"must be {_describe(hint)}, not empty")
        for option in options:
            if option is type(None):
                continue
            ok, result = self._try(value, option, name)
            if ok:
                return result
        self.fail(name, f"must be {_describe(hint)} (got {value!r})")

    def _try(self, value, hint, name):
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                return False, None
            return True, self.build(hint, value, name + ".")
        if typing.get_origin(hint) is list:
            if not isinstance(value, list):
                return False, None
            item_hint = typing.get_args(hint)[0]
            return True, [self.coerce(v, item_hint, f"{name}[{i}]") for i, v in enumerate(value)]
        if hint is bool:
            return isinstance(value, bool), value
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool), value
        if hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True, float(value)
            if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
                try:
                    return True, float(value)
                except ValueError:
                    return False, None
            return False, None
        if hint is str:
            return isinstance(value, str), value
        raise TypeError(f"unsupported schema type {hint!r}")

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
        if m.intermediate_size is not None and m.intermediate_size < 1:
            fail("model.intermediate_size", f"must be at least 1 (got {m.intermediate_size})")
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

        d = r.data
        if isinstance(d.source, str) and d.source != "stdlib":
            fail("data.source", f"must be 'stdlib' or a list of directories (got {d.source!r})")
        if isinstance(d.source, list):
            if not d.source:
                fail("data.source", "must list at least one directory")
            for directory in d.source:
                if not Path(directory).is_dir():
                    fail("data.source", f"lists {directory!r}, which is not a directory")
        if d.max_bytes is not None and d.max_bytes < 1:
            fail("data.max_bytes", f"must be at least 1 (got {d.max_bytes})")
        if not 0 < d.val_fraction < 1:
            fail("data.val_fraction", f"must be between 0 and 1 (got {d.val_fraction})")

        tr = r.training
        for key in ("seq_len", "batch_size", "eval_every", "eval_batches", "log_every"):
            if getattr(tr, key) < 1:
                fail(f"training.{key}", f"must be at least 1 (got {getattr(tr, key)})")
        if tr.seq_len > m.context_length:
            fail("training.seq_len", f"must be at most model.context_length (got {tr.seq_len} > {m.context_length})")
        if tr.max_steps is None and tr.max_tokens is None:
            fail("training.max_steps", "or training.max_tokens must be set")
        if tr.max_steps is not None and tr.max_tokens is not None:
            fail("training.max_tokens", "and training.max_steps are both set; set one of them to null")
        for key in ("max_steps", "max_tokens", "threads"):
            value = getattr(tr, key)
            if value is not None and value < 1:
                fail(f"training.{key}", f"must be at least 1 (got {value})")
        if tr.max_minutes is not None and tr.max_minutes <= 0:
            fail("training.max_minutes", f"must be positive (got {tr.max_minutes})")
        if tr.lr <= 0:
            fail("training.lr", f"must be positive (got {tr.lr})")
        if not 0 <= tr.min_lr <= tr.lr:
            fail("training.min_lr", f"must be between 0 and training.lr (got {tr.min_lr})")
        if tr.warmup_steps < 0:
            fail("training.warmup_steps", f"must be 0 or more (got {tr.warmup_steps})")
        if tr.schedule not in ("cosine", "linear"):
            fail("training.schedule", f"must be cosine or linear (got {tr.schedule!r})")
        if len(tr.betas) != 2 or not all(0 <= b < 1 for b in tr.betas):
            fail("training.betas", f"must be two numbers in [0, 1) (got {tr.betas})")
        if tr.weight_decay < 0:
            fail("training.weight_decay", f"must be 0 or more (got {tr.weight_decay})")
        if tr.grad_clip is not None and tr.grad_clip <= 0:
            fail("training.grad_clip", f"must be positive, or null for no clipping (got {tr.grad_clip})")
        if tr.precision not in ("fp32", "bf16", "fp16"):
            fail("training.precision", f"must be fp32, bf16 or fp16 (got {tr.precision!r})")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
