"""Repetition in a completion: repeated word n-grams, as a score and as spans to highlight.

The score is seq-rep-n (Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training"):
the fraction of the text's word n-grams that repeat an n-gram seen earlier in the same text. 0 means no
n-gram occurs twice; a model that "keeps repeating itself over and over" drives it towards 1.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Repetition:
    n: int
    score: float  # seq-rep-n, in [0, 1]
    spans: tuple[tuple[int, int], ...]  # (start, end) character spans of the repeats, in order, not overlapping


def repetition(text: str, n: int = 4) -> Repetition:
    """Score `text` and find the spans that repeat an earlier n-gram (words compared case-insensitively).
    The first occurrence of an n-gram stays unmarked: what is highlighted is the repeating."""
    if n < 1:
        raise ValueError("n-gram size must be at least 1")
    words = list(WORD.finditer(text))
    keys = [w.group().lower() for w in words]
    grams = [tuple(keys[i:i + n]) for i in range(len(keys) - n + 1)]
    if not grams:
        return Repetition(n, 0.0, ())
    seen: set[tuple[str, ...]] = set()
    marked = [False] * len(words)
    repeats = 0
    for i, gram in enumerate(grams):
        if gram in seen:
            repeats += 1
            marked[i:i + n] = [True] * n
        else:
            seen.add(gram)
    return Repetition(n, repeats / len(grams), _runs(words, marked))


def _runs(words: list[re.Match], marked: list[bool]) -> tuple[tuple[int, int], ...]:
    """Merge runs of consecutive marked words (with the spaces between them) into one span each."""
    spans: list[tuple[int, int]] = []
    for i, word in enumerate(words):
        if not marked[i]:
            continue
        if i > 0 and marked[i - 1]:
            spans[-1] = (spans[-1][0], word.end())
        else:
            spans.append((word.start(), word.end()))
    return tuple(spans)
