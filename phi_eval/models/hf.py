"""transformers backend: a causal LM from the hub or a local directory (or a GGUF file).

Generation is a hand-written decoding loop rather than `model.generate` so that
finished rows leave the batch (they stop costing compute), stop sequences are checked
as text, and sampling draws each row from its own seeded generator (a sampled output
does not depend on its batch neighbours).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import os
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from phi_eval.errors import UsageError
from phi_eval.models.base import Completion, GenerationRequest, truncate_at_stop, unsettled_tail
from phi_eval.models.head import VocabularyHead
from phi_eval.models.hf_measures import HFMeasures

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTO_BATCH_START = 64
STOP_WINDOW_TOKENS = 24  # stop sequences are short; only the tail of a row is decoded each step
TAIL_SPLIT = 0.5  # rows after a shared prefix run in a new pass once under this fraction of the pass's longest
MIN_PREFIX_GROUP = 8  # log-likelihood requests that may share one prefix pass, whatever the batch size


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def weights_fingerprint(directory: Path, gguf_file: str | None = None) -> str:
    """Content hash of a local checkpoint (config + weights), so a retrained model gets new cache keys.
    Files over 256 MiB are hashed by size plus their first and last 32 MiB to keep this fast.
    For a GGUF model only the named file counts: a folder often holds several quantizations."""
    digest = hashlib.sha256()
    weights = {gguf_file} if gguf_file else None
    names = sorted(p for p in directory.iterdir()
                   if p.suffix == ".json" or (p.name in weights if weights else p.suffix in {".safetensors", ".bin"}))
    for path in names:
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as f:
            if size <= 256 * 2**20:
                digest.update(f.read())
            else:
                digest.update(f.read(32 * 2**20))
                f.seek(-32 * 2**20, os.SEEK_END)
                digest.update(f.read())
    return digest.hexdigest()[:16]


class HFModel(HFMeasures):
    def __init__(self, target: str, *, name: str, device: str = "auto", dtype: str = "auto",
                 batch_size: int | str = "auto", gguf_file: str | None = None, revision: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        load_kwargs = {"revision": revision} if revision else {}
        if Path(target).is_dir() and not gguf_file and not (Path(target) / "config.json").is_file():
            raise UsageError(f"no config.json in {target}; point hf: at a directory written by save_pretrained "
                             "(or phi-eval train), or at a hub id")
        if gguf_file:
            load_kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(target, **load_kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype, **load_kwargs)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = " (HF_HUB_OFFLINE=1 is set: download it elsewhere or pass a local directory)" if offline else ""
            raise UsageError(f"cannot load model {target!r}: {str(e).splitlines()[0]}{hint}") from None
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = self._max_length()
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.eos_id or 0)
        self.identity = {
            "name": name,
            "backend": "hf",
            "target": str(target) if not Path(target).exists() else str(Path(target).resolve()),
            "gguf_file": gguf_file,
            "revision": self._revision(target, revision, gguf_file),
            "dtype": str(torch_dtype).removeprefix("torch."),
            "device_type": self.device.type,
        }
        self.parameters = sum(p.numel() for p in self.model.parameters())
        # transformers 5 renamed `past_key_values` to `cache`; older model classes still take the old name.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
        self._head = VocabularyHead(self.model, self._cache_arg)

    def _max_length(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "seq_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return min(self.tokenizer.model_max_length, 2048)

    def _revision(self, target: str, revision: str | None, gguf_file: str | None) -> str:
        path = Path(target)
        if path.is_dir():
            return weights_fingerprint(path, gguf_file)
        return getattr(self.model.config, "_commit_hash", None) or revision or "unknown"

    # -- generation -------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        """A prompt or scored text as lm-eval's HFLM (tok_encode, tok_batch_encode) encodes it for causal
        models: with the tokenizer's own special tokens (a BOS for Gemma and Llama-style tokenizers, none
        for GPT-2 / CodeGen-style ones such as phi's), but none when the text already starts with the BOS
        text. Gemma without its BOS degenerates ("do it it it ...")."""
        bos_text = self.tokenizer.decode(self.prefix_id)
        return self.tokenizer(text, add_special_tokens=not (bos_text and text.startswith(bos_text)))["input_ids"]

    def generate(self, requests: list[GenerationRequest], progress: bool = True) -> Iterator[tuple[int, Completion]]:
        encoded = [self._encode(r.prompt) for r in requests]
        # Longest first: the first batch shows at once whether memory suffices; similar lengths pad little.
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        bar = tqdm(total=len(requests), desc="generate", unit="req", disable=not progress)
        batch_size = AUTO_BATCH_START if self.batch_size == "auto" else int(self.batch_size)
        start = 0
        while start < len(order):
            chunk = order[start:start + batch_size]
            try:
                results = self._generate_batch([requests[i] for i in chunk], [encoded[i] for i in chunk])
            except torch.OutOfMemoryError:
                if self.batch_size != "auto" or len(chunk) == 1:
                    raise UsageError(f"out of memory at batch size {len(chunk)}; pass a smaller --batch-size") from None
                batch_size = len(chunk) // 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for i, completion in zip(chunk, results):
                yield i, completion
            bar.update(len(chunk))
            start += len(chunk)
        bar.close()

    def _generate_batch(self, requests: list[GenerationRequest], encoded: list[list[int]]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        for request_index, _, completion in self._decode(requests, encoded):
            if completion:
                results[request_index] = completion
        return results  # type: ignore[return-value]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the completion of one request in pieces as it is decoded. The pieces join to the text
        generate() returns for the same request (same truncation, stops, end of text and seeded sampling);
        the generator's return value is that Completion.

        Text that could still turn out to be the start of a stop sequence, or half of a multi-byte
        character, is held back until the next tokens settle it."""
        stops = [s for s in request.config.stop if s]
        sent = ""
        for _, tokens, completion in self._decode([request], [self._encode(request.prompt)]):
            if completion:
                break
            text = self.tokenizer.decode(tokens, skip_special_tokens=False)
            ready = text[:len(text) - unsettled_tail(text, stops)]
            # A tokenizer whose decoding of a prefix is not a prefix of the whole waits for the end.
            if len(ready) > len(sent) and ready.startswith(sent):
                yield ready[len(sent):]
                sent = ready
        if completion.text.startswith(sent) and len(completion.text) > len(sent):
            yield completion.text[len(sent):]
        return completion

    @torch.no_grad()
    def _decode(self, requests: list[GenerationRequest],
                encoded: list[list[int]]) -> Iterator[tuple[int, list[int], Completion | None]]:
        """The decoding loop shared by generate() and stream(). After each step it yields, for every row that
        took part in the step, (request index, the row's new tokens so far, its Completion once finished)."""
        config = requests[0].config  # a task uses one config for all its requests
        # Left-truncate over-long prompts, as lm-eval does, but always keep half the context for
        # the prompt; a row stops ("length") when it fills the model's context.
        budget = self.max_length - min(config.max_new_tokens, self.max_length // 2)
        encoded = [ids[-budget:] for ids in encoded]
        new_token_limit = [min(config.max_new_tokens, self.max_length - len(ids)) for ids in encoded]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = None
        if not config.greedy:
            generators = [torch.Generator(device=self.device).manual_seed(r.sampling_seed()) for r in requests]

        logits, cache = self._step(input_ids, attention, positions, None)
        alive = list(range(len(requests)))  # batch row -> request index
        generated: list[list[int]] = [[] for _ in requests]
        last_position = positions[:, -1]

        for _ in range(config.max_new_tokens):
            next_tokens = self._choose(logits, config, [generators[i] for i in alive] if generators else None)
            keep = []
            for row, request_index in enumerate(alive):
                token = int(next_tokens[row])
                tokens = generated[request_index]
                done_reason = None
                if token == self.eos_id:
                    done_reason = "stop"
                else:
                    tokens.append(token)
                    tail = self.tokenizer.decode(tokens[-STOP_WINDOW_TOKENS:], skip_special_tokens=False)
                    if any(s in tail for s in config.stop if s):
                        done_reason = "stop"
                    elif len(tokens) >= new_token_limit[request_index]:
                        done_reason = "length"
                completion = self._finish(tokens, config, done_reason) if done_reason else None
                yield request_index, tokens, completion
                if not completion:
                    keep.append(row)
            if not keep:
                return
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, last_position, next_tokens = attention[index], last_position[index], next_tokens[index]
                alive = [alive[row] for row in keep]
            attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=1)
            last_position = last_position + 1
            logits, cache = self._step(next_tokens[:, None], attention, last_position[:, None], cache)

    def _step(self, input_ids, attention, positions, cache):
        """One forward pass; returns the last position's logits and the updated KV cache."""
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                         **{self._cache_arg: cache}, **self._keep_last)
        return out.logits[:, -1, :], getattr(out, self._cache_arg)

    def _finish(self, tokens: list[int], config, reason: str) -> Completion:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        text, stopped = truncate_at_stop(text, config.stop)
        return Completion(text=text, finish_reason="stop" if stopped else reason, n_tokens=len(tokens))

    @staticmethod
    def _choose(logits: torch.Tensor, config, generators) -> torch.Tensor:
        logits = logits.float()
        if generators is None:
            return logits.argmax(dim=-1)
        probs = F.softmax(logits / config.temperature, dim=-1)
        if config.top_p < 1.0:
            sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > config.top_p  # keep the smallest set reaching top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, sorted_ids, sorted_probs)
        return torch.stack([torch.multinomial(probs[row], 1, generator=g)[0] for row, g in enumerate(generators)])

    # -- log-likelihood -------------------------------------------------------------------

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

    # -- per-token log-probabilities (phi-eval serve's `logprobs`) ------------------------------

    @torch.no_grad()
    def token_logprobs(self, text: str | list[int], top: int = 1) -> dict:
        """Every token of a text (or of token ids) with its log-probability given the tokens before it, as
        OpenAI's `echo` + `logprobs` return a prompt: {"ids", "tokens", "offsets" (character offsets into the
        text), "logprobs" (None for the first token, which has no context), "top" (the `top` most likely
        tokens at each position as {token: log-prob}; None for the first)}. One forward pass, no truncation:
        a text longer than the model's context is a UsageError."""
        import re
        from itertools import accumulate

        from transformers.convert_slow_tokenizer import bytes_to_unicode

        names: dict[int, str] = {}  # token id -> decoded text, filled by batch decoding
        byte_of: dict[str, int] = {}  # byte-level BPE's character -> byte, built when first needed

        def text_of(token_id: int) -> str:
            """A token as text; one holding part of a character is written as OpenAI does ("bytes:\\xe2\\x80"),
            so that different partial tokens stay apart."""
            decoded = names.get(token_id)
            if decoded is None:
                decoded = self.tokenizer.decode([token_id], skip_special_tokens=False)
            piece = self.tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in decoded else None
            if not isinstance(piece, str) or not piece:
                return decoded
            if not byte_of:
                byte_of.update({char: byte for byte, char in bytes_to_unicode().items()})
            if all(c in byte_of for c in piece):  # byte-level BPE
                raw = bytes(byte_of[c] for c in piece)
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):  # SentencePiece byte fallback
                raw = bytes([int(piece[3:5], 16)])
            else:
                return decoded
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

        if isinstance(text, str):
            encoding = self.tokenizer(text, add_special_tokens=False,
                                      return_offsets_mapping=self.tokenizer.is_fast)
            ids = encoding["input_ids"]
        else:
            ids, encoding = list(text), None
        if len(ids) > self.max_length:
            raise UsageError(f"{len(ids)} tokens exceed the model's context of {self.max_length} tokens; "
                             "send a shorter text")
        names.update(zip(ids, self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)))
        tokens = [text_of(i) for i in ids]
        if encoding is not None and "offset_mapping" in encoding:
            offsets = [start for start, _ in encoding["offset_mapping"]]
        elif any(t.startswith("bytes:") for t in tokens):  # characters split across tokens: decode prefixes
            offsets = [len(self.tokenizer.decode(ids[:k], skip_special_tokens=False).rstrip("\ufffd"))
                       for k in range(len(ids))]
        else:
            offsets = [0, *accumulate(len(t) for t in tokens[:-1])] if tokens else []
        result = {"ids": ids, "tokens": tokens, "offsets": offsets, "logprobs": [None] * len(ids),
                  "top": [None] * len(ids)}
        if len(ids) < 2:
            return result
        inputs = torch.tensor([ids[:-1]], device=self.device)
        logprobs = F.log_softmax(self.model(input_ids=inputs).logits[0].float(), dim=-1)
        chosen = logprobs.gather(-1, torch.tensor(ids[1:], device=self.device)[:, None])[:, 0]
        result["logprobs"][1:] = chosen.tolist()
        if top > 0:
            values, indices = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
            indices = indices.tolist()
            new = list({i for row in indices for i in row} - names.keys())
            names.update(zip(new, self.tokenizer.batch_decode([[i] for i in new], skip_special_tokens=False)))
            for position, (row_values, row_ids) in enumerate(zip(values.tolist(), indices), start=1):
                result["top"][position] = {text_of(i): v for i, v in zip(row_ids, row_values)}
        return result
