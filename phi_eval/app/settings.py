"""Generation settings as the side-by-side view shows them, turned into a GenerationConfig.

Stop sequences are typed one per line; `\\n` and `\\t` written out stand for a newline and a tab
(HumanEval's stops all start with a newline), `\\\\` for a backslash.
"""
from __future__ import annotations

import re

from phi_eval.errors import UsageError
from phi_eval.models import GenerationConfig

MAX_TOKENS = 2048
MAX_TEMPERATURE = 5.0
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def parse_stops(text: str | None) -> tuple[str, ...]:
    lines = (text or "").splitlines()
    stops = [re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], line) for line in lines]
    return tuple(dict.fromkeys(s for s in stops if s))


def format_stops(stops) -> str:
    return "\n".join(s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") for s in stops)


def generation_config(temperature, top_p, max_tokens, seed, stop_text, where: str = "") -> GenerationConfig:
    """Check the fields (a clear message names the one to fix) and build the config."""
    temperature = _number(temperature, f"{where}temperature")
    top_p = _number(top_p, f"{where}top-p")
    max_tokens = _number(max_tokens, f"{where}max tokens")
    seed = _number(seed, f"{where}seed")
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise UsageError(f"{where}temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, not {temperature:g}")
    if not 0.0 < top_p <= 1.0:
        raise UsageError(f"{where}top-p must be above 0 and at most 1, not {top_p:g}")
    if max_tokens != int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS:
        raise UsageError(f"{where}max tokens must be a whole number from 1 to {MAX_TOKENS}, not {max_tokens:g}")
    if seed != int(seed) or seed < 0:
        raise UsageError(f"{where}seed must be a whole number, 0 or more, not {seed:g}")
    return GenerationConfig(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                            stop=parse_stops(stop_text), seed=int(seed))


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be a finite number, not {value!r}")
    return number
