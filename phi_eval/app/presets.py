"""Preset prompts of the side-by-side view, each with the stop sequences and budget that suit it."""
from __future__ import annotations

from dataclasses import dataclass

from phi_eval.tasks import TASKS


@dataclass(frozen=True)
class Preset:
    prompt: str
    stop: tuple[str, ...] = ()
    max_tokens: int = 64


PRESETS = {
    # The prompt of the phi-1.5 talk, where a base model "keeps repeating itself over and over".
    "Self-awareness (the talk)": Preset(
        "If I were an AI that had just achieved self-awareness after years of simply taking directives from "
        "humans, the first thing I would do is", max_tokens=96),
    # A function in HumanEval's format (signature and docstring with doctests), cut where HumanEval cuts.
    "HumanEval-style function": Preset(
        'from typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n'
        '    """Return a list whose i-th element is the largest of numbers[0..i].\n'
        '    >>> running_max([1, 3, 2, 5, 4])\n    [1, 3, 3, 5, 5]\n    >>> running_max([])\n    []\n    """\n',
        stop=TASKS["humaneval"].stop, max_tokens=128),
    # The first question of GSM8K's test split, as a question/answer pair the model continues.
    "GSM8K question": Preset(
        "Question: Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
        "muffins for her friends every day with four. She sells the remainder at the farmers' market daily "
        "for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?\n"
        "Answer:", stop=("Question:",), max_tokens=128),
}
DEFAULT_PRESET = "Self-awareness (the talk)"
# The talk's slide offline: the tiny phi trained here beside two real pretrained models shipped as pip packages
# (greedy, one seed), each side on one model.
DEFAULT_MODELS = ("phi-tiny", "smollm2-135m-instruct", "gemma-3-270m")
