"""Log-likelihood requests laid out as prefix trees packed into dense rows, so no pass computes padding.

The choices of one question share their context: a tree holds that shared prefix once, then every
member's own tokens after it (its tail), each tail attending to the prefix and to itself only. Trees
are packed first-fit into rows, each tree attending only within itself (a block-diagonal,
causal 4D mask), with its own position ids. A row of right-padded single requests wastes a quarter to
a third of the transformer's work on a multiple-choice task; packed rows waste only their last columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tree:
    prefix: list[int]  # input tokens every member shares
    tails: list[list[int]]  # each member's input tokens after the prefix (possibly none)

    @property
    def size(self) -> int:
        return len(self.prefix) + sum(map(len, self.tails))

    def column(self, member: int, position: int) -> int:
        """Where, counted from the tree's first column, the member's input token `position` sits."""
        if position < len(self.prefix):
            return position
        return self.size - sum(map(len, self.tails[member:])) + position - len(self.prefix)


@dataclass(frozen=True)
class Rows:
    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width]
    allowed: torch.Tensor  # [rows, 1, width, width] bool: query column may attend key column
    starts: dict[int, tuple[int, int]]  # tree index -> (row, first column)


def pack(sizes: list[int], per_pass: int) -> list[list[int]]:
    """Rows of item indices, `per_pass` rows at a time. A pass's rows are as wide as its largest item (items
    are taken largest first), and smaller items fill their free columns first-fit: padding stays small and
    no row is much wider than its content needs (a packed row's attention costs its width squared)."""
    rows: list[list[int]] = []
    remaining = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    while remaining:
        width = sizes[remaining[0]]
        opened: list[list[int]] = []
        free: list[int] = []
        left = []
        for i in remaining:
            row = next((r for r, space in enumerate(free) if space >= sizes[i]), None)
            if row is None and len(opened) < per_pass:
                opened.append([])
                free.append(width)
                row = len(opened) - 1
            if row is None:
                left.append(i)
                continue
            opened[row].append(i)
            free[row] -= sizes[i]
        rows += opened
        remaining = left
    return rows


def lay_out(trees: list[Tree], rows: list[list[int]], pad_id: int) -> Rows:
    """The tensors of one pass over `rows` (lists of indices into `trees`)."""
    width = max(sum(trees[t].size for t in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    # Per column: which tree (-1 for padding, which attends to itself only) and which branch of it
    # (0 = the shared prefix, k + 1 = member k's tail).
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    branch = torch.zeros((len(rows), width), dtype=torch.long)
    starts: dict[int, tuple[int, int]] = {}
    for r, row in enumerate(rows):
        column = 0
        for t in row:
            tree = trees[t]
            starts[t] = (r, column)
            end = column + len(tree.prefix)
            input_ids[r, column:end] = torch.tensor(tree.prefix)
            position_ids[r, column:end] = torch.arange(len(tree.prefix))
            owner[r, column:end] = t
            for k, tail in enumerate(tree.tails):
                start, end = end, end + len(tail)
                input_ids[r, start:end] = torch.tensor(tail, dtype=torch.long)
                position_ids[r, start:end] = torch.arange(len(tree.prefix), len(tree.prefix) + len(tail))
                owner[r, start:end] = t
                branch[r, start:end] = k + 1
            column = end
    query, key = owner[:, :, None], owner[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same_branch = (branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None])
    allowed = (query == key) & (query >= 0) & same_branch & causal
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty softmax rows
    return Rows(input_ids, position_ids, allowed[:, None], starts)
