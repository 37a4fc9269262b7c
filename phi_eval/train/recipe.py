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
      vocab_size: null         # embedding rows; null = the tokenizer's size (phi-1 pads
                               # codegen's 50295 tokens to 51200); at least the tokenizer's
      dropout: 0.0             # attention and residual dropout
      rope_theta: 10000.0
    tokenizer:                 # exactly one of:
      train:                   #   train a byte-level BPE on the training split
        vocab_size: 4096       #     including the one special token <|endoftext|>
      path: null               #   or load an existing one: a local directory or a hub id
                               #   (e.g. Salesforce/codegen-350M-mono, phi-1's tokenizer)
    data:                      # exactly one of source / stages:
      source: stdlib           # "stdlib" (this Python's standard library) or a list of
                               # directories (their *.py files, test dirs left out) and
                               # JSONL files (one {"text": ...} document a line); corpus.py
      stages: null             # or a list of data stages (source, annotate, classify, filter,
                               # synthesize, dedup) run by phi_eval.data.pipeline; each item
                               # is a mapping whose keys that module documents and checks;
                               # `{stdlib}` in a setting is this Python's standard library
      skip_generated: true     # leave out files whose first 5 lines say "generated"
      max_bytes: null          # cap on the corpus size; documents picked by hash
      val_fraction: 0.05       # held-out documents, picked by hash
    training:
      seq_len: 256             # tokens per sequence; <= model.context_length
      batch_size: 16           # sequences per optimizer step, over all devices
      micro_batch_size: null   # sequences per forward pass on one device; null = batch_size.
                               # Gradient accumulation makes up the rest: batch_size must be
                               # micro_batch_size x devices x accumulation steps
      max_steps: null          # exactly one of max_steps / max_tokens
      max_tokens: null         #   (max_tokens = max_steps * batch_size * seq_len)
      max_minutes: null        # also stop when the training loop has run this long; the
                               # lr decay then follows the clock (not reproducible)
      lr: 1e-3                 # peak learning rate (AdamW)
      min_lr: 0.0              # where the decay ends
      warmup_steps: 0          # linear warmup from 0 to lr
      schedule: cosine         # after warmup: cosine | linear decay, or constant (phi-1.5)
      betas: [0.9, 0.95]       # AdamW betas
      weight_decay: 0.1        # on matrices only, not on biases / norms
      grad_clip: 1.0           # max gradient norm; null = no clipping
      seed: 0
      eval_every: 100          # steps between validation losses (also at start and end)
      eval_batches: 8          # validation batches per evaluation (fixed sequences)
      log_every: 10            # steps between train_log.jsonl lines
      threads: null            # CPU threads; null = all cores available to the process
      precision: fp32          # fp32 | bf16 | fp16 (accelerate mixed precision; bf16/fp16 on GPU)
      checkpoint_every: null   # steps between resumable checkpoints (accelerate's save_state
                               # plus the step and data position); null = none. A rerun of
                               # the same recipe into the same directory resumes from the last
    finetune: null             # a second phase from the first one's weights and tokenizer,
      data: {...}              #   fresh optimizer and schedule; the keys of data: and
      training: {...}          #   training: above (phi-1 = phi-1-base finetuned on CodeExercises)
    evaluate: null             # after training, run phi-eval's harness on the checkpoint:
      tasks: [humaneval]       #   task names or groups, as `phi-eval run --tasks`
      limit: null              #   the options of `phi-eval run`, same names and defaults
      n_samples: null
      temperature: 0.0
      top_p: 1.0
      max_new_tokens: null
      batch_size: auto
      data_dir: null           #   benchmark files (e.g. ../shared/benchmarks) for mbpp
      seed: 1234
      out: null                #   results directory; null = CHECKPOINT/eval

Overrides are `section.key=value` strings with the value read as YAML, e.g.
`training.max_steps=10`, `training.lr=3e-4`, `data.source=[./src]`,
`tokenizer.train.vocab_size=1024`. Relative directories resolve against the
current directory.
"""
from __future__ import annotations

import dataclasses
import re
import sysconfig
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from phi_eval.errors import UsageError
from phi_eval.textfiles import read_text


@dataclass(frozen=True)
class ModelSpec:
    layers: int = 4
    hidden_size: int = 128
    heads: int = 4
    rotary_dim: int = 16
    context_length: int = 256
    intermediate_size: int | None = None
    vocab_size: int | None = None
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
    source: str | list[str] | None = None  # None with no stages means "stdlib"
    stages: list[dict] | None = None
    skip_generated: bool = True
    max_bytes: int | None = None
    val_fraction: float = 0.05


@dataclass(frozen=True)
class TrainingSpec:
    seq_len: int = 256
    batch_size: int = 16
    micro_batch_size: int | None = None
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
    checkpoint_every: int | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_tokens // self.tokens_per_step)  # ceiling division

    def accumulation_steps(self, devices: int) -> int:
        """Forward/backward passes per optimizer step on each device (checked by the loop)."""
        return self.batch_size // ((self.micro_batch_size or self.batch_size) * devices)


@dataclass(frozen=True)
class FinetuneSpec:
    """A second phase that continues from the first phase's weights (and tokenizer) with a
    fresh optimizer: phi-1 is phi-1-base (CodeTextbook) finetuned on CodeExercises."""
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)


@dataclass(frozen=True)
class EvaluateSpec:
    tasks: list[str] = field(default_factory=lambda: ["humaneval"])
    limit: int | None = None
    n_samples: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    batch_size: int | str = "auto"
    data_dir: str | None = None
    seed: int = 1234
    out: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    finetune: FinetuneSpec | None = None
    evaluate: EvaluateSpec | None = None
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
        raw = yaml.safe_load(read_text(path)) or {}
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

    for data in (raw.get("data"), (raw.get("finetune") or {}).get("data") if isinstance(raw.get("finetune"), dict)
                 else None):
        if isinstance(data, dict) and isinstance(data.get("stages"), list):
            data["stages"] = _expand_placeholders(data["stages"])

    checker = _Checker(path, overridden)
    recipe = checker.build(Recipe, raw, "")
    checker.validate(recipe)
    recipe = dataclasses.replace(recipe, data=_normalized(recipe.data))
    if recipe.finetune is not None:
        finetune = dataclasses.replace(recipe.finetune, data=_normalized(recipe.finetune.data))
        recipe = dataclasses.replace(recipe, finetune=finetune)
    if recipe.evaluate is not None:
        absolute = {key: str(Path(getattr(recipe.evaluate, key)).resolve()) for key in ("data_dir", "out")
                    if getattr(recipe.evaluate, key) is not None}
        recipe = dataclasses.replace(recipe, evaluate=dataclasses.replace(recipe.evaluate, **absolute))
    return dataclasses.replace(recipe, path=str(path), overrides=tuple(overrides))


def _expand_placeholders(value):
    """`{stdlib}` in a stage setting: this Python's standard library directory, so a recipe's
    source stage can name it on any machine."""
    if isinstance(value, str):
        return value.replace("{stdlib}", sysconfig.get_paths()["stdlib"])
    if isinstance(value, list):
        return [_expand_placeholders(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_placeholders(v) for k, v in value.items()}
    return value


def _normalized(data: DataSpec) -> DataSpec:
    """Absolute paths, so the checkpoint's recipe.yaml works from anywhere; no source and no
    stages means the standard library."""
    if isinstance(data.source, list):
        return dataclasses.replace(data, source=[str(Path(p).resolve()) for p in data.source])
    if data.source is None and data.stages is None:
        return dataclasses.replace(data, source="stdlib")
    return data


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
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
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
        if hint is dict:
            return isinstance(value, dict), value
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

    def validate_training(self, tr: TrainingSpec, m: ModelSpec, where: str):
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


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
