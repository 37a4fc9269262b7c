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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from phi_eval.errors import UsageError
from phi_eval.schema import SchemaReader
from phi_eval.train.recipe_checks import RecipeChecker
from phi_eval.textfiles import read_text


@dataclass(frozen=True)
class ArchitectureSpec:
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
    model: ArchitectureSpec = field(default_factory=ArchitectureSpec)
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


BUILTIN_RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # shipped in the wheel too


def find_recipe(path) -> Path:
    """A recipe file, or a built-in one named like `phi-tiny` or `recipes/phi-tiny.yaml` (so the
    names README and the zoo cards use work from any directory and from an installed wheel)."""
    path = Path(path)
    if path.is_file():
        return path
    builtin = BUILTIN_RECIPES / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if builtin.is_file():
        return builtin
    names = ", ".join(sorted(p.stem for p in BUILTIN_RECIPES.glob("*.yaml")))
    raise UsageError(f"recipe {path} not found; pass a YAML file or a built-in recipe ({names})")


def load_recipe(path, overrides=()) -> Recipe:
    """Read, override and validate a recipe; bad input raises a one-line UsageError."""
    path = find_recipe(path)
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

    checker = RecipeChecker(path, overridden)
    recipe = SchemaReader(checker.fail, root="the recipe").build(Recipe, raw)
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
