"""Text -> units (words or tokens) -> hashed n-grams, the same way for corpus and benchmark.

Word units follow lm-eval's decontamination janitor (GPT-3's rule): lowercase ASCII letters,
delete ASCII punctuation, split on whitespace. So the 13-grams are the strings lm-eval's
`word_ngrams(Janitor().normalize_string(text), 13)` yields. Token units are the ids of a
transformers tokenizer.

An n-gram's hash is a 64-bit polynomial hash of its symbols (the UTF-8 bytes of the joined
words, or the token ids), computed for a whole batch of documents at once with numpy:
prefix sums S(x) of symbol * P**i give any span's hash as (S(end) - S(start)) * P**-start, and
the wrap-around of uint64 arithmetic is exactly arithmetic mod 2**64, where odd P has an inverse.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

import numpy as np

# ASCII A-Z -> a-z, ASCII punctuation deleted: lm-eval's Janitor.translation_table.
TRANSLATION = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
RAW_WORD = re.compile(r"\S+")

# The same on UTF-8 bytes, which bytes.translate does at memory speed (str.translate with deletions
# does not): the table only touches ASCII, and UTF-8 multi-byte sequences hold no ASCII byte.
# Every character str.split() splits on becomes a space: ASCII ones here, the others by regex.
_SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace()]
BYTE_TABLE = bytes.maketrans(string.ascii_uppercase.encode() + "".join(c for c in _SPACES if c < "\x80").encode(),
                             string.ascii_lowercase.encode() + b" " * sum(c < "\x80" for c in _SPACES))
BYTE_DELETE = string.punctuation.encode()
UNICODE_SPACE = re.compile(b"|".join(re.escape(c.encode()) for c in _SPACES if c >= "\x80"))
SPACE = 32

P = np.uint64(0x9E3779B97F4A7C15 | 1)
P_INV = np.uint64(pow(int(P), -1, 2**64))
BLOCK = 1 << 20  # symbols per block of the prefix sums: memory per batch stays a few bytes per symbol
_powers: tuple[np.ndarray, np.ndarray] | None = None


def normalize(text: str) -> str:
    return text.translate(TRANSLATION)


def words(text: str) -> list[str]:
    return normalize(text).split()


def normalized_bytes(text: str) -> bytes:
    """normalize(text) as UTF-8, with every whitespace character turned into b" "."""
    data = text.encode("utf-8", "surrogatepass").translate(BYTE_TABLE, BYTE_DELETE)
    return data if text.isascii() else UNICODE_SPACE.sub(b" ", data)


def powers() -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i mod 2**64 for i <= BLOCK (computed once)."""
    global _powers
    if _powers is None:
        with np.errstate(over="ignore"):
            one = np.ones(1, dtype=np.uint64)
            _powers = (np.concatenate([one, np.cumprod(np.full(BLOCK, P, dtype=np.uint64))]),
                       np.concatenate([one, np.cumprod(np.full(BLOCK, P_INV, dtype=np.uint64))]))
    return _powers


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads a polynomial hash's bits over all 64."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass
class Grams:
    """The n-grams of a batch of documents: hash, document (index in the batch), start unit."""

    hashes: np.ndarray  # uint64
    docs: np.ndarray  # int64, index of the document in the batch
    positions: np.ndarray  # int64, index of the n-gram's first unit in its document
    units: np.ndarray  # int64, units per document


def prefix_hashes(symbols: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """S(x) = sum of symbols[j] * P**j for j < x, at each of the sorted `positions`.

    Block by block: S(x) = S(block start) + P**(block start) * (local prefix sum within the block)."""
    pw, _ = powers()
    out = np.empty(len(positions), dtype=np.uint64)
    carry, base, step = np.uint64(0), np.uint64(1), pw[BLOCK]
    with np.errstate(over="ignore"):
        for start in range(0, len(symbols) + 1, BLOCK):
            block = symbols[start:start + BLOCK].astype(np.uint64)
            local = np.zeros(len(block) + 1, dtype=np.uint64)
            np.cumsum(block * pw[:len(block)], out=local[1:])
            lo, hi = np.searchsorted(positions, [start, start + BLOCK])
            out[lo:hi] = carry + base * local[positions[lo:hi] - start]
            carry, base = carry + base * local[-1], base * step
    return out


def inverse_powers_at(positions: np.ndarray) -> np.ndarray:
    """P**-x for each x."""
    _, ipw = powers()
    with np.errstate(over="ignore"):
        blocks = np.concatenate([np.ones(1, dtype=np.uint64),
                                 np.cumprod(np.full(int(positions.max(initial=0)) // BLOCK, ipw[BLOCK]))])
        return blocks[positions // BLOCK] * ipw[positions % BLOCK]


def grams_of_units(symbols: np.ndarray, unit_starts: np.ndarray, unit_ends: np.ndarray,
                   units_per_doc: np.ndarray, n: int) -> Grams:
    """n-grams of consecutive units that stay inside one document; units are sorted, non-overlapping
    spans of `symbols`, and an n-gram's hash is that of the symbols from its first unit's start
    to its last unit's end."""
    units_per_doc = np.asarray(units_per_doc, dtype=np.int64)
    doc_of_unit = np.repeat(np.arange(len(units_per_doc)), units_per_doc)
    first_unit = np.concatenate([[0], np.cumsum(units_per_doc)[:-1]]).astype(np.int64)
    total = len(doc_of_unit)
    if total < n:
        empty = np.zeros(0, dtype=np.int64)
        return Grams(np.zeros(0, dtype=np.uint64), empty, empty, units_per_doc)
    first = np.arange(total - n + 1)
    first = first[doc_of_unit[first] == doc_of_unit[first + n - 1]]
    # Units do not overlap, so start_0 < end_0 <= start_1 < ...: one sorted pass gives S at both.
    prefix = prefix_hashes(symbols, np.column_stack([unit_starts, unit_ends]).ravel()).reshape(-1, 2)
    starts, ends = unit_starts[first], unit_ends[first + n - 1]
    with np.errstate(over="ignore"):
        h = (prefix[first + n - 1, 1] - prefix[first, 0]) * inverse_powers_at(starts)
        hashes = mix(h ^ (ends - starts).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))
    docs = doc_of_unit[first]
    return Grams(hashes, docs, first - first_unit[docs], units_per_doc)


class WordUnits:
    """lm-eval's normalisation; a unit is a normalised word."""

    name = "word"

    def describe(self) -> dict:
        return {"unit": "word", "normalisation": "lm-eval janitor / GPT-3: lowercase ASCII, delete ASCII "
                "punctuation, split on whitespace"}

    def grams(self, texts: list[str], n: int) -> Grams:
        # One byte string for the batch, documents separated by a space; runs of spaces then become
        # one, so that each n-gram's bytes are exactly " ".join(its words), the string lm-eval builds.
        parts = [normalized_bytes(t) for t in texts]
        raw = np.frombuffer(b" ".join(parts) + b" ", dtype=np.uint8)
        space = raw == SPACE
        keep = ~space
        keep[1:] |= space[1:] & ~space[:-1]
        symbols = raw[keep]
        # Which document each word is in, from the word starts in the uncollapsed bytes.
        doc_starts = np.cumsum([0] + [len(p) + 1 for p in parts[:-1]])
        raw_starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))
        units = np.bincount(np.searchsorted(doc_starts, raw_starts, side="right") - 1, minlength=len(texts))
        gap = symbols == SPACE
        starts = np.flatnonzero(~gap & np.concatenate([[True], gap[:-1]]))
        ends = np.flatnonzero(~gap & np.concatenate([gap[1:], [True]])) + 1
        return grams_of_units(symbols, starts, ends, units, n)

    def unit_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each unit in the original text (for masking)."""
        # normalize() deletes characters but never whitespace, so the raw whitespace-separated
        # tokens that keep a character map one-to-one onto words(text).
        return [m.span() for m in RAW_WORD.finditer(text) if normalize(m.group())]

    def span_text(self, text: str, start: int, end: int) -> str:
        return " ".join(words(text)[start:end])


class TokenUnits:
    """A transformers tokenizer's ids (no special tokens)."""

    name = "token"

    def __init__(self, tokenizer_path: str):
        from transformers import AutoTokenizer

        self.path = tokenizer_path
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def describe(self) -> dict:
        return {"unit": "token", "tokenizer": self.path, "normalisation": "none (token ids)"}

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def grams(self, texts: list[str], n: int) -> Grams:
        ids = self.encode(texts)
        flat = np.fromiter((t + 1 for row in ids for t in row), dtype=np.uint64)  # +1: no symbol is 0
        positions = np.arange(len(flat), dtype=np.int64)
        return grams_of_units(flat, positions, positions + 1, np.array([len(r) for r in ids]), n)

    def unit_spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(span) for span in
                self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]

    def span_text(self, text: str, start: int, end: int) -> str:
        return self.tokenizer.decode(self.encode([text])[0][start:end])


def make_units(unit: str, tokenizer: str | None = None):
    from phi_eval.errors import UsageError

    if unit == "word":
        return WordUnits()
    if unit == "token":
        if not tokenizer:
            raise UsageError("--unit token needs --tokenizer DIR (a transformers tokenizer or model directory)")
        return TokenUnits(tokenizer)
    raise UsageError(f"unknown --unit {unit!r}; use word or token")
