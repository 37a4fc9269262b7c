"""transformers backend: a causal LM from the hub or a local directory (or a GGUF file).

Generation is a hand-written decoding loop rather than `model.generate` so that
finished rows leave the batch (they stop costing compute), stop sequences are checked
as text, and sampling draws each row from its own seeded generator (a sampled output
does not depend on its batch neighbours).
"""
from __future__ import annotations

import hashlib
import inspect
import os
import threading
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from phi_eval.errors import UsageError
from phi_eval.models.base import Completion, GenerationRequest, truncate_at_stop, unsettled_tail
from phi_eval.models.head import VocabularyHead
from phi_eval.models.hf_measures import HFMeasures
from phi_eval.models.hf_scoring import AUTO_BATCH_START, HFScoring

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# transformers builds a model under process-wide patches (parameters created on the meta device): a model
# built in another thread meanwhile (the app loads models in parallel) would be left without weights.
LOADING = threading.Lock()
STOP_WINDOW_TOKENS = 24  # stop sequences are short; only the tail of a row is decoded each step


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


class HFModel(HFScoring, HFMeasures):
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
            with LOADING:
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
        self._head = VocabularyHead(self.model)

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
