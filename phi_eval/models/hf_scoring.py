"""lm-eval's log-likelihoods on a local transformers model, fast: requests whose contexts share a prefix run
it once, packed with other requests into dense rows (phi_eval.models.packing); only positions that predict
continuation tokens are projected onto the vocabulary (phi_eval.models.head). Tokenisation, left-truncation, the empty-context
prefix token and the greedy flag are lm-eval's (tests/test_lm_eval_parity.py).

A mixin of HFModel: it expects `tokenizer`, `model`, `device`, `batch_size`, `max_length`, `eos_id`,
`pad_id`, `_encode` and `_head`."""
from __future__ import annotations

from typing import Iterator

import torch
from tqdm.auto import tqdm

from phi_eval.errors import UsageError
from phi_eval.models.packing import Tree, lay_out, pack

AUTO_BATCH_START = 64
MIN_PREFIX_GROUP = 8  # log-likelihood requests that may share one prefix tree, whatever the batch size
HEAD_BLOCK = 1024  # scored positions collected before they reach the vocabulary (a 262k one: ~20% faster than 256)


class HFScoring:
    @property
    def prefix_id(self) -> int:
        """The token an empty context stands for (lm-eval's prefix_token_id): BOS, else EOS."""
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_id

    def _split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's _encode_pair: trailing whitespace of the context moves to the continuation; the
        continuation's tokens are those of the whole string past the context's own token count."""
        if not context:
            continuation_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if continuation_ids and continuation_ids[0] == self.prefix_id:
                return continuation_ids[:1], continuation_ids[1:]
            return [self.prefix_id], continuation_ids
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self._encode(context)
        return context_ids, self._encode(context + continuation)[len(context_ids):]

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: bool = True) -> list[tuple[float, bool]]:
        """lm-eval's (sum of log-probs of the continuation's tokens, whether greedy decoding yields them).

        Consecutive pairs whose contexts share most of their tokens (the choices of one question; the
        sentence before WinoGrande's blank) form a tree that runs the shared prefix once; the trees are
        packed into dense rows (phi_eval.models.packing). Requests that must be left-truncated, and every
        request of a model whose attention takes no custom mask, run as lm-eval does, one row per pair."""
        requests = [self._split_pair(c, x) for c, x in pairs]
        trees, alone = self._trees(requests)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        with tqdm(total=len(requests), desc="loglikelihood", unit="req", disable=not progress) as bar:
            for i, score in zip(alone, self._score_tokens([requests[i] for i in alone], bar)):
                results[i] = score
            if trees:
                for i, score in self._score_trees(trees, requests, bar).items():
                    results[i] = score
        return results

    @property
    def _packed_width(self) -> int:
        """The widest packed row this model may take (0: its attention takes no custom mask). Within a
        sliding window the window never cuts in, so one mask serves its local and global layers alike."""
        if getattr(self.model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
            return 0
        config = getattr(self.model.config, "text_config", None) or self.model.config
        window = getattr(config, "sliding_window", None)
        return min(self.max_length, window) if window else self.max_length

    def _trees(self, requests: list[tuple[list[int], list[int]]]) -> tuple[list[tuple[Tree, list[int]]], list[int]]:
        """([(tree, its request indices)], indices scored alone). A tree is a run of consecutive requests
        whose contexts share at least half of the first one's tokens, at most a batch of them; its prefix is
        the longest run of input tokens (context + continuation but its last token) they all share, so it
        may reach into the continuations (PIQA's two solutions often start alike)."""
        width = self._packed_width
        if not width:
            return [], list(range(len(requests)))
        limit = max(AUTO_BATCH_START if self.batch_size == "auto" else int(self.batch_size), MIN_PREFIX_GROUP)
        trees: list[tuple[Tree, list[int]]] = []
        alone: list[int] = []
        members: list[int] = []
        length = 0
        first: list[int] = []

        def close() -> None:
            if not members:
                return
            tree = Tree(first[:length], [(requests[i][0] + requests[i][1])[length:-1] for i in members])
            if tree.size <= width:
                trees.append((tree, list(members)))
            else:
                alone.extend(members)

        for i, (context, continuation) in enumerate(requests):
            if not continuation or len(context) + len(continuation) > self.max_length + 1:
                alone.append(i)  # nothing to score, or left-truncated as lm-eval does
                continue
            row = context + continuation[:-1]
            if members and len(members) < limit:
                common = min(length, len(row))
                common = next((k for k in range(common) if first[k] != row[k]), common)
                if common * 2 >= len(requests[members[0]][0]):
                    members.append(i)
                    length = common
                    continue
            close()
            members, length, first = [i], len(row), row
        close()
        return trees, alone

    def loglikelihood_rolling(self, texts: list[str], progress: bool = True) -> list[float]:
        """lm-eval's loglikelihood_rolling: the log-probability of every token of each text, the first one
        conditioned on the prefix token, in disjoint windows of the model's context length."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owner = [], []
        for index, text in enumerate(texts):
            for window in get_rolling_token_windows(self._encode(text), prefix_token=self.prefix_id,
                                                    max_seq_len=self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owner.append(index)
        totals = [0.0] * len(texts)
        with tqdm(total=len(windows), desc="loglikelihood_rolling", unit="window", disable=not progress) as bar:
            for index, (total, _) in zip(owner, self._score_tokens(windows, bar)):
                totals[index] += total
        return totals

    def _score_tokens(self, requests: list[tuple[list[int], list[int]]], bar) -> list[tuple[float, bool]]:
        """(sum of log-probs, is greedy) of each continuation after its context, as lm-eval's HFLM computes it:
        the last max_length tokens of context + continuation in one row, longest rows first."""
        longest = max((len(continuation) for _, continuation in requests), default=0)
        if longest > self.max_length:  # lm-eval's HFLM fails here too: no row holds the whole continuation
            raise UsageError(f"a continuation of {longest} tokens is longer than the model's context "
                             f"({self.max_length}); score long texts with loglikelihood_rolling")
        rows = [(context + continuation)[-(self.max_length + 1):][:-1] for context, continuation in requests]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        # A continuation with no tokens of its own (merged into the context's last token) scores 0, as in lm-eval.
        empty = [i for i, (_, continuation) in enumerate(requests) if not continuation]
        bar.update(len(empty))
        order = sorted((i for i, (_, cont) in enumerate(requests) if cont), key=lambda i: -len(rows[i]))
        scored = self._batched(order, lambda _: 1, lambda chunk: self._score_rows(
            [rows[i] for i in chunk], [requests[i][1] for i in chunk]))
        for i, score in scored:
            results[i] = score
            bar.update(1)
        return results

    def _batched(self, units: list, cost, run) -> Iterator[tuple[object, object]]:
        """(unit, output) for every unit: consecutive units run together while their summed cost fits the
        batch size (a unit bigger than that runs alone); under --batch-size auto an out-of-memory batch
        is retried at half the size."""
        batch_size = AUTO_BATCH_START if self.batch_size == "auto" else int(self.batch_size)
        start = 0
        while start < len(units):
            end, total = start + 1, cost(units[start])
            while end < len(units) and total + cost(units[end]) <= batch_size:
                total += cost(units[end])
                end += 1
            try:
                outputs = run(units[start:end])
            except torch.OutOfMemoryError:
                if self.batch_size != "auto" or end - start == 1:
                    raise UsageError(f"out of memory at batch size {total}; pass a smaller --batch-size") from None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                batch_size = max(1, total // 2)
                continue
            yield from zip(units[start:end], outputs)
            start = end

    @torch.no_grad()
    def _score_rows(self, inputs: list[list[int]], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        width = max(len(ids) for ids in inputs)
        batch = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        for row, ids in enumerate(inputs):
            batch[row, :len(ids)] = torch.tensor(ids)  # right padding keeps positions plain
        states = self._head.forward(batch.to(self.device))
        # Only the positions that predict continuation tokens reach the vocabulary.
        wanted = [[(row, position, token) for position, token in zip(range(len(ids) - len(cont), len(ids)), cont)]
                  for row, (ids, cont) in enumerate(zip(inputs, continuations))]
        flat = [w for row in wanted for w in row]
        logprobs, greedy = self._head.score(states[[r for r, _, _ in flat], [p for _, p, _ in flat]],
                                            [t for _, _, t in flat])
        bounds = torch.tensor([0] + [len(row) for row in wanted]).cumsum(0).tolist()
        return [self._continuation_score(logprobs[a:b], greedy[a:b]) for a, b in zip(bounds, bounds[1:])]

    @torch.no_grad()
    def _score_trees(self, trees: list[tuple[Tree, list[int]]], requests: list[tuple[list[int], list[int]]],
                     bar) -> dict[int, tuple[float, bool]]:
        """Every tree's requests scored from packed rows, a batch of rows per pass. The positions that
        predict continuation tokens (a shared prefix's once for all members) are collected across passes
        and reach the vocabulary together, in blocks big enough to keep the projection's matmul efficient."""
        per_pass = AUTO_BATCH_START if self.batch_size == "auto" else int(self.batch_size)
        rows = pack([tree.size for tree, _ in trees], per_pass)
        index: dict[tuple[int, int, int], int] = {}  # (row, column, target) -> its place among the scored positions
        keys: list[tuple[int, int, int]] = []
        picks: dict[int, list[int]] = {}
        pending: list[torch.Tensor] = []
        scored: list[tuple[torch.Tensor, torch.Tensor]] = []

        def place(key: tuple[int, int, int]) -> int:
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            return index[key]

        def flush() -> None:
            done = sum(len(lp) for lp, _ in scored)
            scored.append(self._head.score(torch.cat(pending), [target for _, _, target in keys[done:]]))
            pending.clear()

        passes = self._batched(list(enumerate(rows)), lambda _: 1,
                               lambda chunk: self._forward_rows(trees, [row for _, row in chunk]))
        for (r, row), (states, starts) in passes:
            fresh = len(keys)
            for t in row:
                tree, members = trees[t]
                for k, i in enumerate(members):
                    context, continuation = requests[i]
                    full = context + continuation
                    picks[i] = [place((r, starts[t] + tree.column(k, p), full[p + 1]))
                                for p in range(len(context) - 1, len(full) - 1)]
                bar.update(len(members))
            pending.append(states[[column for _, column, _ in keys[fresh:]]])
            if not self._head.split or sum(map(len, pending)) >= HEAD_BLOCK:
                flush()  # an unsplit model's states are whole logit rows: score them at once
        if pending:
            flush()
        logprobs = torch.cat([lp for lp, _ in scored])
        greedy = torch.cat([g for _, g in scored])
        return {i: self._continuation_score(logprobs[p], greedy[p]) for i, p in picks.items()}

    def _forward_rows(self, trees: list[tuple[Tree, list[int]]], rows: list[list[int]]
                      ) -> list[tuple[torch.Tensor, dict[int, int]]]:
        """One pass over packed rows: per row, (its per-column states, tree -> first column)."""
        layout = lay_out([tree for tree, _ in trees], rows, self.pad_id)
        mask = layout.allowed
        if self.model.config._attn_implementation == "eager":  # eager attention adds the mask to its scores
            dtype = self.model.dtype
            mask = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)
        states = self._head.forward(layout.input_ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=layout.position_ids.to(self.device))
        starts = [{t: column for t, (r, column) in layout.starts.items() if r == row} for row in range(len(rows))]
        return [(states[row], starts[row]) for row in range(len(rows))]

    @staticmethod
    def _continuation_score(logprobs: torch.Tensor, greedy: torch.Tensor) -> tuple[float, bool]:
        """(sum of the continuation's log-probs, whether each of its tokens is the argmax)."""
        return float(logprobs.sum()), bool(greedy.all())
