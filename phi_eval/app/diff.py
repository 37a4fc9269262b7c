"""Word-level diff of two completions, for reading where two models part ways."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# A word with the whitespace that follows it (leading whitespace of the text is a piece of its own),
# so joining the pieces gives the text back exactly.
PIECE = re.compile(r"^\s+|\S+\s*")


@dataclass(frozen=True)
class WordDiff:
    ops: tuple[tuple[str, str], ...]  # ("same" | "removed" | "added", text), in reading order
    similarity: float  # difflib's ratio over words, 1.0 for identical texts


def word_diff(a: str, b: str) -> WordDiff:
    """What changes `a` into `b`, word by word (whitespace differences alone do not count)."""
    pieces_a, pieces_b = PIECE.findall(a), PIECE.findall(b)
    matcher = difflib.SequenceMatcher(None, [p.strip() for p in pieces_a], [p.strip() for p in pieces_b],
                                      autojunk=False)
    ops: list[tuple[str, str]] = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            ops.append(("same", "".join(pieces_b[b0:b1])))
            continue
        if a1 > a0:
            ops.append(("removed", "".join(pieces_a[a0:a1])))
        if b1 > b0:
            ops.append(("added", "".join(pieces_b[b0:b1])))
    return WordDiff(tuple(ops), matcher.ratio())
