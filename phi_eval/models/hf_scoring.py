"""lm-eval's log-likelihoods on a local transformers model, fast: requests whose contexts share a prefix run
it once and their continuations from its KV cache; only positions that predict continuation tokens are
projected onto the vocabulary (phi_eval.models.head). Tokenisation, left-truncation, the empty-context
prefix token and the greedy flag are lm-eval's (tests/test_lm_eval_parity.py).

A mixin of HFModel: it expects `tokenizer`, `model`, `device`, `batch_size`, `max_length`, `eos_id`,
`_encode`, `_head` and `_cache_arg`."""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from tqdm.auto import tqdm

from phi_eval.errors import UsageError

AUTO_BATCH_START = 64
TAIL_SPLIT = 0.5  # rows after a shared prefix run in a new pass once under this fraction of the pass's longest
MIN_PREFIX_GROUP = 8  # log-likelihood requests that may share one prefix pass, whatever the batch size


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
        sentence before WinoGrande's blank) run that shared prefix once and every rest from its KV cache;
        the others run as lm-eval does, one row per pair."""
        requests = [self._split_pair(c, x) for c, x in pairs]
        shared, alone = self._prefix_groups(requests)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        with tqdm(total=len(requests), desc="loglikelihood", unit="req", disable=not progress) as bar:
            for i, score in zip(alone, self._score_tokens([requests[i] for i in alone], bar)):
                results[i] = score
            scored = self._batched(shared, lambda group: len(group[1]), lambda chunk: self._score_shared(
                [(length, [requests[i] for i in members]) for length, members in chunk]))
            for (_, members), scores in scored:
                for i, score in zip(members, scores):
                    results[i] = score
                bar.update(len(members))
        return results

    def _prefix_groups(self, requests: list[tuple[list[int], list[int]]]
                       ) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """([(shared prefix length, request indices)], indices scored alone). A group is a run of consecutive
        requests whose contexts share at least half of the first one's tokens, at most a batch of them. The
        prefix is the longest run of input tokens (context + continuation but its last token) they all share,
        so it may reach into the continuations (PIQA's two solutions often start alike); it stops short of
        every row's last input token, so each member keeps a tail to run."""
        limit = max(AUTO_BATCH_START if self.batch_size == "auto" else int(self.batch_size), MIN_PREFIX_GROUP)
        groups: list[tuple[int, list[int]]] = []
        alone: list[int] = []
        members: list[int] = []
        length = 0
        first: list[int] = []

        def close() -> None:
            if len(members) > 1:
                groups.append((length, list(members)))
            else:
                alone.extend(members)

        for i, (context, continuation) in enumerate(requests):
            if not continuation or len(context) < 2 or len(context) + len(continuation) > self.max_length + 1:
                alone.append(i)  # empty, nothing to share, or left-truncated as lm-eval does
                continue
            row = context + continuation[:-1]
            if members and len(members) < limit:
                common = min(length, len(row) - 1)
                common = next((k for k in range(common) if first[k] != row[k]), common)
                if common * 2 >= len(requests[members[0]][0]):
                    members.append(i)
                    length = common
                    continue
            close()
            members, length, first = [i], len(row) - 1, row
        close()
        groups.sort(key=lambda group: -max(len(requests[i][0]) + len(requests[i][1]) for i in group[1]))
        return groups, alone

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
        states, _ = self._head.forward(batch.to(self.device))
        # Only the positions that predict continuation tokens reach the vocabulary.
        wanted = [[(row, position, token) for position, token in zip(range(len(ids) - len(cont), len(ids)), cont)]
                  for row, (ids, cont) in enumerate(zip(inputs, continuations))]
        flat = [w for row in wanted for w in row]
        logprobs, greedy = self._head.score(states[[r for r, _, _ in flat], [p for _, p, _ in flat]],
                                            [t for _, _, t in flat])
        bounds = torch.tensor([0] + [len(row) for row in wanted]).cumsum(0).tolist()
        return [self._continuation_score(logprobs[a:b], greedy[a:b]) for a, b in zip(bounds, bounds[1:])]

    @torch.no_grad()
    def _score_shared(self, groups: list[tuple[int, list[tuple[list[int], list[int]]]]]
                      ) -> list[list[tuple[float, bool]]]:
        """The groups' shared prefixes run once, right-padded (plain causal attention, no mask), scoring the
        continuation tokens that fall inside them once for all members; then the rest of every member runs on
        that KV cache, longest first, split where the rows get much shorter so that they pad little."""
        width = max(length for length, _ in groups)
        prefix = torch.full((len(groups), width), self.pad_id, dtype=torch.long)
        past = torch.zeros((len(groups), width), dtype=torch.long)
        # Each scored position once, as (row, position, target token) -> its index among all scores; a member
        # picks the indices of its continuation's tokens in order.
        wanted: dict[tuple[int, int, int], int] = {}
        picks: dict[tuple[int, int], list[int]] = {}
        for g, (length, members) in enumerate(groups):
            prefix[g, :length] = torch.tensor((members[0][0] + members[0][1])[:length])
            past[g, :length] = 1
            for k, (context, continuation) in enumerate(members):
                full = context + continuation
                picks[g, k] = [wanted.setdefault((g, p, full[p + 1]), len(wanted))
                               for p in range(len(context) - 1, length)]
        states, cache = self._head.forward(prefix.to(self.device), use_cache=True)
        gathered = [self._gather(states, wanted)]  # all positions reach the vocabulary together, below
        # (group, member, context + continuation, tokens after the prefix but the last), longest first
        rows = sorted(((g, k, context + continuation, (context + continuation)[length:-1])
                       for g, (length, members) in enumerate(groups)
                       for k, (context, continuation) in enumerate(members)),
                      key=lambda row: -len(row[3]))
        starts = [0]
        for i in range(1, len(rows)):
            if len(rows[i][3]) < TAIL_SPLIT * len(rows[starts[-1]][3]):
                starts.append(i)
        done = len(wanted)
        for start, end in zip(starts, starts[1:] + [len(rows)]):
            chunk = rows[start:end]
            index = torch.tensor([g for g, _, _, _ in chunk])
            chunk_cache = copy.deepcopy(cache) if end < len(rows) else cache
            chunk_cache.batch_select_indices(index.to(self.device))
            tail_width = len(chunk[0][3])
            tail = torch.full((len(chunk), tail_width), self.pad_id, dtype=torch.long)
            attention = torch.cat([past[index], torch.zeros((len(chunk), tail_width), dtype=torch.long)], dim=1)
            wanted = {}
            for row, (g, k, full, ids) in enumerate(chunk):
                tail[row, :len(ids)] = torch.tensor(ids)
                attention[row, width:width + len(ids)] = 1
                length, context = groups[g][0], groups[g][1][k][0]
                picks[g, k] += [done + wanted.setdefault((row, p - length, full[p + 1]), len(wanted))
                                for p in range(max(len(context) - 1, length), len(full) - 1)]
            positions = torch.tensor([groups[g][0] for g, _, _, _ in chunk])[:, None] + torch.arange(tail_width)
            states, _ = self._head.forward(tail.to(self.device), attention_mask=attention.to(self.device),
                                           position_ids=positions.to(self.device), **{self._cache_arg: chunk_cache})
            gathered.append(self._gather(states, wanted))
            done += len(wanted)
        logprobs, greedy = self._head.score(torch.cat([s for s, _ in gathered]), [t for _, ts in gathered for t in ts])
        return [[self._continuation_score(logprobs[picks[g, k]], greedy[picks[g, k]]) for k in range(len(members))]
                for g, (_, members) in enumerate(groups)]

    @staticmethod
    def _gather(states: torch.Tensor, wanted: dict[tuple[int, int, int], int]) -> tuple[torch.Tensor, list[int]]:
        """(states, target tokens) of the (row, position, target) keys of `wanted`, in its index order."""
        keys = sorted(wanted, key=wanted.__getitem__)
        return states[[r for r, _, _ in keys], [p for _, p, _ in keys]], [t for _, _, t in keys]

    @staticmethod
    def _continuation_score(logprobs: torch.Tensor, greedy: torch.Tensor) -> tuple[float, bool]:
        """(sum of the continuation's log-probs, whether each of its tokens is the argmax)."""
        return float(logprobs.sum()), bool(greedy.all())
