"""Is the difference real? Paired tests of two models scored on the same items of a task.

Each item's value is the mean of its samples' per-sample score (the records' "scores"; see
phi_eval/tasks/base.py), so the two models' values pair up item by item. Two tests:

- McNemar's exact test when every value is 0 or 1 (one greedy sample per item: pass@1, acc, exact
  match): only the items the models disagree on count, and under "no difference" each disagreement
  goes either way with probability 1/2, a binomial test on the discordant pairs;
- a paired bootstrap of the mean difference (any values): resample items with replacement, keep the
  pairs together; the 95% percentile interval of the resampled means and a two-sided p-value (how
  often a resampled mean lies at least as far from the observed one as the observed one lies from 0).

The verdict uses McNemar's p-value where it applies, the bootstrap's elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05
CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 1234
BOOTSTRAP_BLOCK = 1 << 22  # resampled entries held in memory at once
FEW_VALUES = 64  # up to this many distinct differences, resample counts of each value


def sample_value(record: dict, metric: str, filter_: str | None) -> float | None:
    """A sample's score for results.json's "<metric>,<filter>", None if the record has none."""
    scores = record.get("scores")
    if isinstance(scores, dict):
        for key in (f"{metric},{filter_}", metric):
            value = scores.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None
    if metric == "pass@1" and isinstance(record.get("passed"), bool):  # runs written before "scores"
        return float(record["passed"])
    return None


def per_item_values(records, metric: str, filter_: str | None = None) -> dict[str, float]:
    """doc_id -> mean over the item's samples; items whose records carry no such score are left out."""
    sums: dict[str, list[float]] = {}
    for record in records:
        value = sample_value(record, metric, filter_)
        if value is not None and "doc_id" in record:
            entry = sums.setdefault(str(record["doc_id"]), [0.0, 0])
            entry[0] += value
            entry[1] += 1
    return {doc_id: total / count for doc_id, (total, count) in sums.items()}


@dataclass(frozen=True)
class McNemar:
    a_only: int  # items only the first model got right
    b_only: int
    p_value: float


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test of paired 0/1 outcomes."""
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    discordant = a_only + b_only
    p_value = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return McNemar(a_only, b_only, float(p_value))


@dataclass(frozen=True)
class Bootstrap:
    difference: float  # mean of a - b over the paired items
    low: float
    high: float
    p_value: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> Bootstrap:
    """Percentile interval and two-sided p-value of mean(a - b), resampling items with replacement."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(differences)
    observed = float(differences.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(differences, return_counts=True)
    if len(values) <= FEW_VALUES:
        # Resampling n items is drawing how many times each distinct difference is picked: a multinomial over
        # the few distinct values (0/1 outcomes differ by -1, 0 or 1), the same distribution at a fraction of the cost.
        block = max(1, BOOTSTRAP_BLOCK // len(values))
        means = np.concatenate([rng.multinomial(n, counts / n, size=min(block, resamples - start)) @ values / n
                                for start in range(0, resamples, block)])
    else:
        block = max(1, BOOTSTRAP_BLOCK // n)
        means = np.concatenate([differences[rng.integers(0, n, size=(min(block, resamples - start), n))].mean(axis=1)
                                for start in range(0, resamples, block)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # Shift the resampled means to "no difference": how often are they as far from it as observed?
    extreme = np.sum(np.abs(means - observed) >= abs(observed) - 1e-12)
    return Bootstrap(observed, float(low), float(high), float((extreme + 1) / (resamples + 1)))


def compare(values_a: dict[str, float], values_b: dict[str, float], *, alpha: float = ALPHA,
            resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE) -> dict | None:
    """Both tests on the items both models have (in A's order); None when they share no item."""
    shared = [doc_id for doc_id in values_a if doc_id in values_b]
    if not shared:
        return None
    a = np.array([values_a[d] for d in shared])
    b = np.array([values_b[d] for d in shared])
    bootstrap = paired_bootstrap(a, b, resamples=resamples, seed=seed, confidence=confidence)
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    mcnemar = mcnemar_exact(a, b) if binary else None
    p_value = mcnemar.p_value if mcnemar else bootstrap.p_value
    return {
        "value_a": float(a.mean()),
        "value_b": float(b.mean()),
        "difference": bootstrap.difference,
        "ci_low": bootstrap.low,
        "ci_high": bootstrap.high,
        "confidence": confidence,
        "n_paired": len(shared),
        "only_a": len(values_a) - len(shared),
        "only_b": len(values_b) - len(shared),
        "test": "mcnemar_exact" if mcnemar else "paired_bootstrap",
        "p_value": p_value,
        "p_value_mcnemar": mcnemar.p_value if mcnemar else None,
        "discordant": {"a_only": mcnemar.a_only, "b_only": mcnemar.b_only} if mcnemar else None,
        "p_value_bootstrap": bootstrap.p_value,
        "resamples": resamples,
        "seed": seed,
        "alpha": alpha,
        "significant": p_value < alpha,
    }
