"""The SQLite cache and the pass@k aggregation."""
import math

import pytest

from phi_eval.cache import Cache, NoCache, make_key
from phi_eval.metrics import mean_stderr, pass_at_k_metrics


def test_cache_survives_reopening(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = Cache(path)
    key = make_key({"name": "m"}, {"prompt": "p"})
    cache.put("generation", key, {"text": "x"})
    cache.close()
    reopened = Cache(path)
    assert reopened.get_many("generation", [key, "other"]) == {key: {"text": "x"}}
    assert reopened.get_many("execution", [key]) == {}  # namespaces are separate


def test_no_cache_remembers_nothing():
    cache = NoCache()
    cache.put("generation", "k", 1)
    assert cache.get_many("generation", ["k"]) == {}


def test_keys_depend_on_every_part():
    assert make_key({"a": 1}, "p") == make_key({"a": 1}, "p")
    assert make_key({"a": 1}, "p") != make_key({"a": 2}, "p")


def test_pass_at_k_reported_only_for_k_up_to_n():
    metrics = pass_at_k_metrics([(10, 3), (10, 0), (10, 10)])
    assert metrics["pass@1,none"] == pytest.approx((0.3 + 0 + 1) / 3)
    assert metrics["pass@10,none"] == pytest.approx((1 + 0 + 1) / 3)
    assert "pass@100,none" not in metrics
    assert set(pass_at_k_metrics([(1, 1), (1, 0)])) == {"pass@1,none", "pass@1_stderr,none"}


def test_stderr_is_that_of_a_mean():
    values = [1.0, 0.0, 1.0, 0.0]
    assert mean_stderr(values) == pytest.approx(math.sqrt((4 * 0.25) / 3 / 4))
    assert math.isnan(mean_stderr([1.0]))
