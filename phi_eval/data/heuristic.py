"""An offline HEURISTIC stand-in for the LLM annotator (`annotator: heuristic`): a baseline and a test aid.

It scores what a reader can check without a model, 0-10 in total, for Python:

    docstrings      3.0  module, class and function docstrings (share of definitions with one)
    comments        1.5  comment lines per code line, best between 5% and 40%
    names           1.5  defined names that are words (3+ characters), few one-letter names
    line shape      1.0  mean line length <= 80 and no line over 160 (minified code fails)
    self-contained  1.0  imports only from the standard library, no relative imports
    AST shape       2.0  defines functions or classes (0.5), bodies of 2-40 statements (0.5),
                         nesting depth <= 4 (0.5), an example: doctest, __main__ block or test (0.5)

Text that does not parse as Python scores at most 2 (its prose and line shape). It says
nothing about correctness or about what a student would learn; an LLM grade does.
"""
from __future__ import annotations

import ast
import io
import sys
import tokenize

NAME = "heuristic-v1"
STDLIB = frozenset(sys.stdlib_module_names)
NESTING = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
           ast.AsyncFor, ast.AsyncWith, ast.Match)


def heuristic_score(text: str) -> float:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    shape = line_shape(lines)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        words = sum(1 for w in text.split() if w.isalpha())
        return round(min(2.0, shape + min(1.0, words / max(1, len(text.split())))), 2)
    try:
        score = docstrings(tree) + comments(text, len(lines)) + names(tree) + shape + self_contained(tree)
        score += ast_shape(tree, text)
    except RecursionError:  # pathologically nested code teaches nothing
        return 0.0
    return round(min(10.0, score), 2)


def line_shape(lines: list[str]) -> float:
    mean = sum(map(len, lines)) / len(lines)
    return (0.5 if mean <= 80 else 0.0) + (0.5 if max(map(len, lines)) <= 160 else 0.0)


def definitions(tree: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def docstrings(tree: ast.Module) -> float:
    nodes = definitions(tree)
    if not nodes:
        return 1.0 if ast.get_docstring(tree) else 0.0
    covered = sum(1 for n in nodes if ast.get_docstring(n)) / len(nodes)
    return 2.5 * covered + (0.5 if ast.get_docstring(tree) else 0.0)


def comments(text: str, code_lines: int) -> float:
    try:
        count = sum(1 for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT)
    except (tokenize.TokenError, SyntaxError):
        return 0.0
    density = count / code_lines
    if 0.05 <= density <= 0.4:
        return 1.5
    return 0.75 if 0 < density < 0.05 or density > 0.4 else 0.0


def names(tree: ast.Module) -> float:
    defined = [n.name for n in definitions(tree)]
    defined += [a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs
                if a.arg not in ("self", "cls")]
    defined += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    if not defined:
        return 0.0
    wordy = sum(1 for name in defined if len(name.strip("_")) >= 3) / len(defined)
    single = sum(1 for name in defined if len(name) == 1) / len(defined)
    return round(1.0 * wordy + (0.5 if single <= 0.2 else 0.0), 3)


def self_contained(tree: ast.Module) -> float:
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                return 0.0
            modules.append(node.module or "")
    if not modules:
        return 1.0
    return round(sum(1 for m in modules if m.split(".")[0] in STDLIB) / len(modules), 3)


def depth(node: ast.AST, level: int = 0) -> int:
    deeper = level + isinstance(node, NESTING)
    return max([deeper, *(depth(child, deeper) for child in ast.iter_child_nodes(node))])


def ast_shape(tree: ast.Module, text: str) -> float:
    functions = [n for n in definitions(tree) if not isinstance(n, ast.ClassDef)]
    score = 0.5 if definitions(tree) else 0.0
    if functions and all(2 <= len(f.body) <= 40 for f in functions):
        score += 0.5
    if depth(tree) <= 4:
        score += 0.5
    has_example = ">>>" in text or any(
        isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body) or any(
        isinstance(n, ast.Assert) for n in ast.walk(tree))
    return score + (0.5 if has_example else 0.0)
