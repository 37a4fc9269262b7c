"""Paraphrase and code similarity between benchmark items and corpus chunks (phi-1, Section 5.2).

- Chunks: a corpus document that parses as Python gives one chunk per top-level function or
  class method (phi-1 compared items with exercises, each a function); any other document gives
  one chunk per unindented `def`/`class` block in it, and windows of `window_lines` lines
  overlapping by half. A document of at most 2 x `window_lines` lines is also one chunk whole.
- Embedding distance: the mean of a causal LM's last hidden state over the tokens, L2-normalised
  (phi-1: "normalized CodeGen-Mono 350M embedding"), and the L2 distance between two such vectors.
  Only the `top_k` nearest chunks of each item are kept, so memory does not grow with the corpus.
- AST match rate: 1 - (edit distance between the two ASTs' pre-order token sequences) / (length of
  the longer one), i.e. phi-1's "string edit distance between the ASTs", normalised to [0, 1].
  Before comparing, imports and docstrings are dropped and the names a snippet defines (functions, arguments,
  variables) become v0, v1, ... in order of appearance, so whitespace, comments and renamed
  identifiers do not change the rate; builtins, attributes and constants are kept.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from phi_eval.errors import UsageError

BUILTINS = frozenset(dir(builtins))
DEFINITION = re.compile(r"(async\s+def|def|class)\s")
UNMARKED = (ast.Module, ast.Load, ast.Store, ast.Del)  # no token of their own; children still count
DROPPED = (ast.Import, ast.ImportFrom)


@dataclass
class Chunk:
    document: str
    first_line: int  # 1-based, inclusive
    last_line: int
    text: str

    def where(self) -> str:
        return f"{self.document} lines {self.first_line}-{self.last_line}"


# ------------------------------------------------------------------------------- chunking

def chunks_of(document: str, text: str, window_lines: int = 30) -> list[Chunk]:
    lines = text.splitlines()
    # A short document (an exercise, a snippet) is also compared whole, as phi-1 compared whole exercises.
    whole = [Chunk(document, 1, len(lines), text)] if 0 < len(lines) <= 2 * window_lines else []
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # Prose with code in it (a markdown answer, an exercise): its unindented definitions, then windows.
        return distinct(whole + loose_definitions(document, lines) + windows(document, lines, window_lines))
    functions = []
    for node in tree.body:
        nested = node.body if isinstance(node, ast.ClassDef) else []
        for definition in [node, *nested]:
            if isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([definition.lineno, *(d.lineno for d in definition.decorator_list)])
                functions.append(Chunk(document, first, definition.end_lineno,
                                       "\n".join(lines[first - 1:definition.end_lineno])))
    return distinct(whole + (functions or windows(document, lines, window_lines)))


def distinct(chunks: list[Chunk]) -> list[Chunk]:
    return list({(c.first_line, c.last_line): c for c in chunks}.values())


def loose_definitions(document: str, lines: list[str]) -> list[Chunk]:
    """Each unindented `def`/`class` line with the indented (or blank) lines that follow it."""
    chunks = []
    for start, line in enumerate(lines):
        if DEFINITION.match(line):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):
                end += 1
            while end > start + 1 and not lines[end - 1].strip():
                end -= 1
            chunks.append(Chunk(document, start + 1, end, "\n".join(lines[start:end])))
    return chunks


def windows(document: str, lines: list[str], window_lines: int) -> list[Chunk]:
    step = max(window_lines // 2, 1)
    return [Chunk(document, start + 1, min(start + window_lines, len(lines)),
                  "\n".join(lines[start:start + window_lines]))
            for start in range(0, max(len(lines) - step, 1), step)
            if "".join(lines[start:start + window_lines]).strip()]


def iter_chunks(documents, window_lines: int = 30) -> Iterator[Chunk]:
    for document in documents:
        yield from chunks_of(document.name, document.text, window_lines)


def batched(iterable: Iterable, size: int) -> Iterator[list]:
    batch = []
    for element in iterable:
        batch.append(element)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------ embeddings

class Embedder:
    """Embeddings (mean-pooled, L2-normalised last hidden states) of a model phi-eval loads (zoo name,
    hf:DIR, ...), with the batch size and length the caller chose."""

    def __init__(self, spec: str, *, device: str = "auto", batch_size: int = 16, max_tokens: int = 512):
        from phi_eval.models import load_model
        from phi_eval.models.base import Embeddings, require
        from phi_eval.zoo import parse_model_spec

        self.spec = spec
        self.model = require(load_model(parse_model_spec(spec), device=device), Embeddings, f"--embed-model {spec}")
        self.batch_size, self.max_tokens = batch_size, max_tokens

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.embed(texts, batch_size=self.batch_size, max_tokens=self.max_tokens)


def l2_distances(items: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """L2 distance between unit vectors: sqrt(2 - 2 cos)."""
    return np.sqrt(np.clip(2.0 - 2.0 * items @ chunks.T, 0.0, None))


class NearestChunks:
    """The top_k nearest chunks of every item, updated batch by batch."""

    def __init__(self, n_items: int, top_k: int):
        self.top_k = top_k
        self.distances = np.full((n_items, 0), np.inf, dtype=np.float32)
        self.chunks = np.empty((n_items, 0), dtype=object)

    def update(self, distances: np.ndarray, chunks: list[Chunk]) -> None:
        candidates = np.empty(len(chunks), dtype=object)
        candidates[:] = chunks
        all_d = np.concatenate([self.distances, distances.astype(np.float32)], axis=1)
        all_c = np.concatenate([self.chunks, np.broadcast_to(candidates, distances.shape)], axis=1)
        keep = np.argsort(all_d, axis=1, kind="stable")[:, :self.top_k]
        self.distances = np.take_along_axis(all_d, keep, axis=1)
        self.chunks = np.take_along_axis(all_c, keep, axis=1)

    def results(self) -> list[list[tuple[float, Chunk]]]:
        return [[(float(d), c) for d, c in zip(ds, cs)] for ds, cs in zip(self.distances, self.chunks)]


# ------------------------------------------------------------------------------------ AST

def ast_tokens(code: str) -> list[str] | None:
    """Pre-order node tokens with docstrings dropped and defined names numbered; None if unparsable."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    docstrings = {id(node.body[0]) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    names: dict[str, str] = {}

    def name(identifier: str) -> str:
        if identifier in BUILTINS:
            return identifier
        return names.setdefault(identifier, f"v{len(names)}")

    tokens: list[str] = []

    def visit(node: ast.AST) -> None:
        if id(node) in docstrings or isinstance(node, DROPPED):
            return
        if not isinstance(node, UNMARKED):
            tokens.append(type(node).__name__)
        if isinstance(node, ast.Name):
            tokens.append(name(node.id))
        elif isinstance(node, ast.arg):
            tokens.append(name(node.arg))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            tokens.append(name(node.name))
        elif isinstance(node, ast.Attribute):
            tokens.append("." + node.attr)
        elif isinstance(node, ast.Constant):
            # Strings count by kind, not content: messages and docs are the n-gram check's business.
            tokens.append("str" if isinstance(node.value, str) else repr(node.value))
        for child in ast.iter_child_nodes(node):
            visit(child)

    try:
        visit(tree)
    except RecursionError:
        return None
    return tokens


def ast_match_rates(items: list[list[str] | None], chunks: list[list[str] | None], workers: int = 1) -> np.ndarray:
    """items x chunks matrix of AST match rates (0 where either side does not parse)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    rates = np.zeros((len(items), len(chunks)), dtype=np.float32)
    rows = [i for i, t in enumerate(items) if t]
    cols = [j for j, t in enumerate(chunks) if t]
    if rows and cols:
        rates[np.ix_(rows, cols)] = process.cdist([items[i] for i in rows], [chunks[j] for j in cols],
                                                  scorer=Levenshtein.normalized_similarity, dtype=np.float32,
                                                  workers=workers)
    return rates
