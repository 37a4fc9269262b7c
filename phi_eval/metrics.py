"""pass@k over many problems, with the standard error lm-eval reports for a mean."""
from __future__ import annotations

import math

from phi_eval.execution import pass_at_k

K_VALUES = (1, 10, 100)


def mean_stderr(values: list[float]) -> float:
    """Sample standard deviation over sqrt(n): the stderr of a mean, as lm-eval computes it."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def pass_at_k_metrics(correct_per_doc: list[tuple[int, int]]) -> dict[str, float]:
    """[(n samples, c correct) per problem] -> {"pass@1,none": ..., "pass@1_stderr,none": ...}.
    pass@k is reported only for k <= the smallest n, where the unbiased estimator is defined."""
    if not correct_per_doc:
        return {}
    smallest_n = min(n for n, _ in correct_per_doc)
    metrics: dict[str, float] = {}
    for k in K_VALUES:
        if k > smallest_n:
            break
        per_doc = [pass_at_k(n, c, k) for n, c in correct_per_doc]
        metrics[f"pass@{k},none"] = sum(per_doc) / len(per_doc)
        metrics[f"pass@{k}_stderr,none"] = mean_stderr(per_doc)
    return metrics


def mean_metric(key: str, per_doc: list[float]) -> dict[str, float]:
    """{"<metric>,<filter>": mean, "<metric>_stderr,<filter>": its stderr} over per-doc values ({} for none)."""
    if not per_doc:
        return {}
    metric, _, filter_ = key.partition(",")
    return {key: sum(per_doc) / len(per_doc), f"{metric}_stderr,{filter_}": mean_stderr(per_doc)}
