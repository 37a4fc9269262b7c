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
    problem = next((p for p in field_problems(temperature, top_p, max_tokens, seed, where) if p), None)
    if problem:
        raise UsageError(problem)
    return GenerationConfig(max_new_tokens=int(float(max_tokens)), temperature=float(temperature),
                            top_p=float(top_p), stop=parse_stops(stop_text), seed=int(float(seed)))


def field_problems(temperature, top_p, max_tokens, seed, where: str = "") -> list[str | None]:
    """For each of temperature, top-p, max tokens and seed: what is wrong with it, or None."""
    return [_check(temperature, f"{where}temperature", lambda t: 0.0 <= t <= MAX_TEMPERATURE,
                   f"must be between 0 (greedy) and {MAX_TEMPERATURE:g}"),
            _check(top_p, f"{where}top-p", lambda p: 0.0 < p <= 1.0, "must be above 0 and at most 1"),
            _check(max_tokens, f"{where}max tokens", lambda n: n == int(n) and 1 <= n <= MAX_TOKENS,
                   f"must be a whole number from 1 to {MAX_TOKENS}"),
            _check(seed, f"{where}seed", lambda s: s == int(s) and s >= 0, "must be a whole number, 0 or more")]


def _check(value, name: str, valid, rule: str) -> str | None:
    try:
        number = _number(value, name)
    except UsageError as e:
        return str(e)
    return None if valid(number) else f"{name} {rule}, not {number:g}"


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be a finite number, not {value!r}")
    return number
