"""The models the side-by-side view offers, marked by whether they can run on this machine now, runnable first.

Runnable: a local checkpoint that exists, weights in an installed package, a hub model that is in the local
cache (or any hub model when the hub is reachable), an openai: card with a key or base URL configured.
Nothing here touches the network or loads a model: the list is built when the page is built.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.zoo import Card, load_zoo

RUNNABLE_MARK, MISSING_MARK = "✓", "✗"


@dataclass(frozen=True)
class Choice:
    value: str  # the spec
    runnable: bool
    why: str  # where it runs from, or what it lacks

    @property
    def label(self) -> str:
        return f"{RUNNABLE_MARK if self.runnable else MISSING_MARK} {self.value} — {self.why}"


def card_choice(card: Card) -> Choice:
    if card.backend == "openai":
        configured = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        return Choice(card.name, bool(configured), "OpenAI API" if configured else "needs OPENAI_API_KEY")
    if card.package is not None:
        installed = _installed(card.package.module)
        return Choice(card.name, installed, "installed package" if installed else f"needs pip install {card.package.pip}")
    if card.checkpoint is not None:
        if card.checkpoint.exists():
            return Choice(card.name, True, "local checkpoint")
        return Choice(card.name, False, f"train it: phi-eval train {card.recipe}" if card.recipe else "checkpoint missing")
    if _hub_cached(card.hub_id):
        return Choice(card.name, True, "in the hub cache")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return Choice(card.name, False, "not downloaded (offline)")
    return Choice(card.name, not card.gated, "downloads from the hub" + (" (gated: needs a token)" if card.gated else ""))


def model_choices() -> list[Choice]:
    """Zoo cards, and local checkpoints under $PHI_EVAL_HOME/models that no card names; runnable ones first."""
    try:
        zoo = load_zoo()
    except UsageError:  # a broken card: its message shows when a model is chosen
        zoo = {}
    carded = {card.checkpoint for card in zoo.values()}
    local = sorted(d for d in paths.models_dir().glob("*") if (d / "config.json").is_file() and d.resolve() not in carded)
    choices = [card_choice(card) for _, card in sorted(zoo.items())]
    choices += [Choice(f"hf:{d}", True, "local checkpoint") for d in local]
    return sorted(choices, key=lambda c: not c.runnable)  # stable: alphabetical within each group


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None  # found, not imported (imports can be heavy)
    except (ImportError, ValueError):
        return False


def _hub_cached(hub_id: str | None) -> bool:
    if not hub_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # a malformed id or cache: not runnable from the cache
        return False
