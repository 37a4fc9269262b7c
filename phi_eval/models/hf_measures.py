"""What a local transformers model can measure beyond generation and lm-eval's log-likelihoods: token
counts, embeddings, per-token log-probabilities (phi-eval serve's `logprobs`) and statistics, and windowed
continuation losses. The contamination checks (the
embedding and Min-K% methods), the data stages (classifier, diversity) and `train --compare` (held-out bits
per byte) use these through the capabilities declared in phi_eval.models.base, never the model's internals.

A mixin of HFModel: it expects `tokenizer`, `model`, `device`, `pad_id`, `max_length` and `identity`."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from phi_eval.errors import UsageError


class HFMeasures:
    def count_tokens(self, text: str) -> int:
        """Tokens of a text, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _padded_batches(self, texts: list[str], batch_size: int, max_tokens: int, min_width: int = 1,
                        pad_empty: bool = False):
        """(rows, lengths, ids, mask) batches of texts of similar lengths, right-padded, each text cut at
        max_tokens; an empty text is its pad token where `pad_empty`."""
        limit = min(max_tokens, self.max_length)
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][:limit] for t in texts]
        if pad_empty:
            ids = [i or [self.pad_id] for i in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(max(len(ids[i]) for i in rows), min_width)
            batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                batch[r, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                mask[r, :len(ids[i])] = 1
            yield rows, [len(ids[i]) for i in rows], batch.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def embed(self, texts: list[str], *, batch_size: int = 16, max_tokens: int = 512) -> np.ndarray:
        """Mean-pooled, L2-normalised last hidden states, one row per text (an empty text: its pad token)."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for rows, _, batch, mask in self._padded_batches(texts, batch_size, max_tokens, pad_empty=True):
            hidden = self.model(input_ids=batch, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
            weights = mask.unsqueeze(-1).float()
            mean = (hidden.float() * weights).sum(1) / weights.sum(1)
            out[rows] = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
        return out

    @torch.no_grad()
    def token_statistics(self, texts: list[str], *, batch_size: int = 8, max_tokens: int = 512,
                         progress: bool = True) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per text: log p of each token given the ones before it, and the mean and standard deviation of
        log p under the model's distribution at that step (Min-K% and Min-K%++ use them)."""
        results: list = [None] * len(texts)
        batches = self._padded_batches(texts, batch_size, max_tokens, min_width=2)
        for rows, lengths, batch, mask in tqdm(batches, total=-(-len(texts) // batch_size), desc="membership",
                                               unit="batch", disable=not progress):
            logits = self.model(input_ids=batch, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            chosen = logp.gather(-1, batch[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)
            p = logp.exp()
            mu = (p * logp).sum(-1)
            sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
            for r, (i, length) in enumerate(zip(rows, lengths)):
                n = max(length - 1, 0)
                results[i] = (chosen[r, :n].cpu().numpy(), mu[r, :n].cpu().numpy(), sigma[r, :n].cpu().numpy())
        return results

    @torch.no_grad()
    def continuation_nats(self, pairs: list[tuple[str, str]], progress: bool = True) -> list[float]:
        """-log P(continuation | context) in nats for each pair. A continuation longer than the model's
        context is scored in windows, each token seeing up to a full context of the tokens before it (an
        empty context is the bos/eos token)."""
        tokenizer, window = self.tokenizer, self.max_length
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        result = []
        for context, continuation in tqdm(pairs, desc=f"held-out loss {self.identity['name']}", disable=not progress):
            context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
            ids = [prefix] + tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            first = 1 + len(context_ids)  # index of the continuation's first token
            nats = 0.0
            for start in range(first, len(ids), window):
                end = min(start + window, len(ids))  # score ids[start:end]
                left = max(0, end - 1 - window)
                inputs = torch.tensor([ids[left:end - 1]], device=self.device)
                logprobs = torch.log_softmax(self.model(input_ids=inputs).logits[0].float(), dim=-1)
                targets = torch.tensor(ids[start:end], device=self.device)
                nats -= float(logprobs[start - 1 - left:end - 1 - left].gather(-1, targets[:, None]).sum())
            result.append(nats)
        return result

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
        logprobs = torch.log_softmax(self.model(input_ids=inputs).logits[0].float(), dim=-1)
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
