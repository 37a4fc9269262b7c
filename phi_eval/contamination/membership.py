"""Membership scores from the evaluated model alone: Min-K% and Min-K%++ (no corpus needed).

Min-K% (Shi et al. 2023): the mean log-probability of the k% least likely tokens of a text.
Min-K%++ (Zhang et al. 2024): the same over each token's log-probability standardised by the
model's distribution at that step, (log p(x_t) - mu_t) / sigma_t with mu_t = E_z[log p(z)] and
sigma_t^2 = Var_z[log p(z)]. Higher means "looks more like training data".

Neither score is a verdict: its scale depends on the model, the domain and the text length. So
each item's score is reported with its percentile among the scores of a reference set (texts
the model cannot have seen, from the same domain), and the benchmark's AUC against that set:
0.5 = indistinguishable from the reference, towards 1 = the benchmark looks memorised.
"""
from __future__ import annotations

import math

import numpy as np

from phi_eval.errors import UsageError


def lowest_mean(values: np.ndarray, k: float) -> float | None:
    if len(values) == 0:
        return None
    count = max(1, math.ceil(k * len(values)))
    return float(np.sort(values)[:count].mean())


def min_k(logp: np.ndarray, k: float) -> float | None:
    return lowest_mean(logp, k)


def min_k_plus_plus(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float) -> float | None:
    return lowest_mean((logp - mu) / sigma, k)


def percentile(score: float | None, reference: np.ndarray) -> float | None:
    """Share of reference scores below `score` (ties count half)."""
    if score is None or len(reference) == 0:
        return None
    below = np.count_nonzero(reference < score) + 0.5 * np.count_nonzero(reference == score)
    return round(float(below / len(reference)), 6)


def scores(model, texts: list[str], k: float, **kwargs) -> list[dict]:
    return [{"min_k": min_k(logp, k), "min_k_pp": min_k_plus_plus(logp, mu, sigma, k), "scored_tokens": len(logp)}
            for logp, mu, sigma in model.token_statistics(texts, **kwargs)]


def membership(model_spec: str, texts: list[str], reference_texts: list[str] | None, *, k: float = 0.2,
               device: str = "auto", batch_size: int = 8, max_tokens: int = 512, progress: bool = True
               ) -> tuple[list[dict], dict]:
    """Per-text scores (with percentiles when a reference set is given) and a summary."""
    from phi_eval.models import load_model
    from phi_eval.models.base import TokenLogprobs, require
    from phi_eval.zoo import parse_model_spec

    if not 0 < k <= 1:
        raise UsageError(f"--mink-k must be in (0, 1], e.g. 0.2 for 20%, not {k}")
    model = require(load_model(parse_model_spec(model_spec), device=device), TokenLogprobs, f"--mink-model {model_spec}")
    options = {"batch_size": batch_size, "max_tokens": max_tokens, "progress": progress}
    items = scores(model, texts, k, **options)
    summary = {"model": model_spec, "k": k, "max_tokens": max_tokens, "reference_texts": None}
    for key in ("min_k", "min_k_pp"):
        values = [s[key] for s in items if s[key] is not None]
        summary[f"{key}_mean"] = float(np.mean(values)) if values else None
    if reference_texts:
        reference = scores(model, reference_texts, k, **options)
        summary["reference_texts"] = len(reference_texts)
        for key in ("min_k", "min_k_pp"):
            ref = np.array([s[key] for s in reference if s[key] is not None])
            summary[f"reference_{key}_mean"] = float(ref.mean()) if len(ref) else None
            for s in items:
                s[f"{key}_percentile"] = percentile(s[key], ref)
            known = [s[f"{key}_percentile"] for s in items if s[f"{key}_percentile"] is not None]
            # The mean percentile is the Mann-Whitney AUC of benchmark scores against the reference.
            summary[f"{key}_auc"] = round(float(np.mean(known)), 6) if known else None
    return items, summary
