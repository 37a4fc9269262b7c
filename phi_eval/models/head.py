"""Log-probabilities of chosen tokens without the vocabulary's logits at every position.

A causal LM's forward pass ends in a projection onto the vocabulary: 262,144 logits per position for
Gemma 3, more work than the whole transformer body for a 270M model. Scoring a continuation needs them
only at the positions that predict its tokens, and there only three numbers: the chosen token's
logit, the log of the softmax's normaliser, and whether the chosen token is the argmax. VocabularyHead
runs the body alone, then projects just those positions, a slice of the vocabulary at a time, so no
[batch, length, vocabulary] tensor is ever built.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POSITIONS = 1024  # positions scored together (fewer reuse a slice of the weights less: ~20% slower at 256)
VOCABULARY_SLICE = 8192  # vocabulary entries projected at once: 20 MiB of weights for a 640-wide model


class VocabularyHead:
    def __init__(self, model):
        self.model = model
        body = getattr(model, "base_model", None)
        self.body = body if body is not None and body is not model else None
        self.projection = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        # Split only where body + projection reproduce the model's own logits (some architectures scale them).
        self.split = (self.body is not None and isinstance(self.projection, torch.nn.Linear)
                      and self._reproduces_logits())

    @torch.no_grad()
    def _reproduces_logits(self) -> bool:
        ids = torch.arange(4, device=next(self.model.parameters()).device)[None]
        full = self.model(input_ids=ids).logits
        try:
            split = self._project(self.body(input_ids=ids).last_hidden_state)
        except (TypeError, AttributeError):
            return False
        return split.shape == full.shape and torch.allclose(split, full, rtol=1e-5, atol=1e-5)

    def _project(self, states: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Logits of vocabulary entries start..end-1, as the model computes them."""
        bias = self.projection.bias
        logits = F.linear(states, self.projection.weight[start:end], None if bias is None else bias[start:end])
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """One pass without a KV cache: per-position states for score(), the body's final hidden states or,
        where the model cannot be split, its logits."""
        if self.split:
            return self.body(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state
        return self.model(input_ids=input_ids, use_cache=False, **kwargs).logits

    def score(self, states: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability of each target, whether it is the argmax) given the [N, ...] states of the positions
        predicting them. The vocabulary is swept in slices with a running max and sum of exponentials (the
        online log-sum-exp), so a slice of the projection's weights and its logits stay in the CPU's cache:
        about a third faster than projecting whole rows on Gemma's 262k-token vocabulary."""
        target = torch.tensor(targets, dtype=torch.long, device=states.device)
        logprobs, greedy = [], []
        for start in range(0, len(targets), POSITIONS):
            lp, gr = self._score_block(states[start:start + POSITIONS], target[start:start + POSITIONS])
            logprobs.append(lp)
            greedy.append(gr)
        if not logprobs:
            return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        return torch.cat(logprobs), torch.cat(greedy)

    def _score_block(self, states: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(len(target), device=states.device)
        vocabulary = self.projection.weight.shape[0] if self.split else states.shape[-1]
        top = torch.full((len(target),), -torch.inf, device=states.device)
        total = torch.zeros(len(target), device=states.device)
        argmax = torch.zeros(len(target), dtype=torch.long, device=states.device)
        chosen = torch.zeros(len(target), device=states.device)
        for start in range(0, vocabulary, VOCABULARY_SLICE):
            end = min(start + VOCABULARY_SLICE, vocabulary)
            logits = self._slice(states, start, end).float()
            inside = (target >= start) & (target < end)
            chosen[inside] = logits[rows[inside], target[inside] - start]
            slice_top, slice_argmax = logits.max(dim=-1)
            higher = slice_top > top  # strictly: the first of equal maxima wins, as with argmax
            argmax = torch.where(higher, slice_argmax + start, argmax)
            new_top = torch.maximum(top, slice_top)
            total = total * torch.exp(top - new_top) + logits.sub_(new_top[:, None]).exp_().sum(dim=-1)
            top = new_top
        return (chosen - top) - total.log(), argmax == target

    def _slice(self, states: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return self._project(states, start, end) if self.split else states[:, start:end].clone()
