"""Log-probabilities of chosen tokens without the vocabulary's logits at every position.

A causal LM's forward pass ends in a projection onto the vocabulary: 262,144 logits per position for
Gemma 3, more work than the whole transformer body for a 270M model. Scoring a continuation needs them
only at the positions that predict its tokens, and there only three numbers: the chosen token's
logit, the log of the softmax's normaliser, and whether the chosen token is the argmax. VocabularyHead
runs the body alone, then projects just those positions, a block at a time, so no
[batch, length, vocabulary] tensor is ever built.
"""
from __future__ import annotations

import torch

BLOCK_ELEMENTS = 2**24  # logits per projected block: 64 MiB in float32


class VocabularyHead:
    def __init__(self, model, cache_arg: str):
        self.model = model
        self.cache_arg = cache_arg
        body = getattr(model, "base_model", None)
        self.body = body if body is not None and body is not model else None
        self.projection = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        # Split only where body + projection reproduce the model's own logits (some architectures scale them).
        self.split = self.body is not None and self.projection is not None and self._reproduces_logits()

    @torch.no_grad()
    def _reproduces_logits(self) -> bool:
        ids = torch.arange(4, device=next(self.model.parameters()).device)[None]
        full = self.model(input_ids=ids).logits
        try:
            split = self._project(self.body(input_ids=ids).last_hidden_state)
        except (TypeError, AttributeError):
            return False
        return split.shape == full.shape and torch.allclose(split, full, rtol=1e-5, atol=1e-5)

    def _project(self, states: torch.Tensor) -> torch.Tensor:
        logits = self.projection(states)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, input_ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, object]:
        """One pass: (per-position states for score(), the KV cache or None). The states are the body's
        final hidden states, or the logits where the model cannot be split."""
        if self.split:
            out = self.body(input_ids=input_ids, **kwargs)
            states = out.last_hidden_state
        else:
            out = self.model(input_ids=input_ids, **kwargs)
            states = out.logits
        return states, getattr(out, self.cache_arg, None)

    def score(self, states: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability of each target, whether it is the argmax) given the [N, ...] states of the positions
        predicting them, computed as F.log_softmax does: (logit - max) - log(sum(exp(logits - max)))."""
        target = torch.tensor(targets, dtype=torch.long, device=states.device)
        vocabulary = self.projection.weight.shape[0] if self.split else states.shape[-1]
        rows = max(1, BLOCK_ELEMENTS // vocabulary)
        logprobs, greedy = [], []
        for start in range(0, len(targets), rows):
            block = states[start:start + rows]
            logits = (self._project(block) if self.split else block).float()
            top, argmax = logits.max(dim=-1)
            chosen = logits.gather(-1, target[start:start + rows, None])[:, 0]
            log_norm = (logits - top[:, None]).exp_().sum(dim=-1).log_()
            logprobs.append((chosen - top) - log_norm)
            greedy.append(argmax == target[start:start + rows])
        if not logprobs:
            return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        return torch.cat(logprobs), torch.cat(greedy)
