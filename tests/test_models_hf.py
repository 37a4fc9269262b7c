"""The transformers backend: batch-invariant greedy decoding, seeded sampling, stops, log-likelihoods."""
import pytest
import torch

from phi_eval.errors import UsageError
from phi_eval.models.base import GenerationConfig, GenerationRequest, truncate_at_stop
from phi_eval.models.hf import HFModel
from phi_eval.tasks import TASKS

STOPS = TASKS["humaneval"].stop


def load(directory, batch_size):
    return HFModel(str(directory), name="tiny", device="cpu", dtype="float32", batch_size=batch_size)


def humaneval_requests(config, n_docs=24, n_samples=1):
    docs = TASKS["humaneval"].load_docs(None)[:n_docs]
    return [GenerationRequest(d["prompt"], config, s, d["doc_id"]) for d in docs for s in range(n_samples)]


def texts(model, requests):
    done = dict(model.generate(requests, progress=False))
    return [done[i].text for i in range(len(requests))]


def test_greedy_outputs_identical_at_batch_size_1_and_n(tiny_phi_dir):
    requests = humaneval_requests(GenerationConfig(max_new_tokens=48, stop=STOPS))
    one = texts(load(tiny_phi_dir, 1), requests)
    assert texts(load(tiny_phi_dir, 8), requests) == one
    assert texts(load(tiny_phi_dir, "auto"), requests) == one
    assert len(set(one)) > 1  # prompts differ, so outputs do: the comparison is not vacuous


def test_sampling_is_seeded_and_independent_of_batching(tiny_phi_dir):
    config = GenerationConfig(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=7)
    requests = humaneval_requests(config, n_docs=4, n_samples=3)
    one = texts(load(tiny_phi_dir, 1), requests)
    assert texts(load(tiny_phi_dir, 12), requests) == one
    assert len(set(one[:3])) == 3  # the three samples of one prompt differ
    reseeded = [GenerationRequest(r.prompt, GenerationConfig(**{**config.__dict__, "seed": 8}), r.sample_index)
                for r in requests]
    assert texts(load(tiny_phi_dir, 12), reseeded) != one


def test_stop_sequences_cut_the_completion_and_free_the_row(tiny_phi_dir):
    model = load(tiny_phi_dir, 8)
    free = texts(model, humaneval_requests(GenerationConfig(max_new_tokens=40), n_docs=8))
    # Use a piece of each free-running output as a stop: every row must end before it, early.
    stops = tuple(sorted({t[10:13] for t in free if len(t) > 13}))
    rows_seen = []
    hook = model.model.register_forward_hook(lambda mod, args, kwargs_out: rows_seen.append(kwargs_out.logits.shape[0]))
    stopped = dict(model.generate(humaneval_requests(GenerationConfig(max_new_tokens=40, stop=stops), n_docs=8),
                                  progress=False))
    hook.remove()
    for completion in stopped.values():
        assert not any(s in completion.text for s in stops)
        assert completion.finish_reason == "stop"
    assert rows_seen[0] == 8 and min(rows_seen) < 8  # finished rows left the batch


def test_truncate_at_stop_picks_the_earliest():
    assert truncate_at_stop("a\nif b\ndef c", ("\ndef", "\nif")) == ("a", True)
    assert truncate_at_stop("abc", ("\ndef",)) == ("abc", False)


def test_loglikelihood_matches_a_direct_forward_pass(tiny_phi_dir):
    model = load(tiny_phi_dir, 4)
    pairs = [("def add(a, b):", "\n    return a + b"), ("import os", "\nimport sys"), ("x = 1", " + 2")]
    results = model.loglikelihood(pairs, progress=False)
    for (context, continuation), (logprob, _) in zip(pairs, results):
        ids = model.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        n_context = len(model.tokenizer(context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        expected = sum(float(logits[i - 1, ids[i]]) for i in range(n_context, len(ids)))
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_a_continuation_longer_than_the_context_is_a_usage_error(tiny_phi_dir):
    model = load(tiny_phi_dir, 4)
    long_text = " x = 1" * (model.max_length + 10)
    with pytest.raises(UsageError, match="longer than the model's context"):
        model.loglikelihood([("def f():", long_text)], progress=False)
    assert model.loglikelihood_rolling([long_text], progress=False)[0] < 0  # long texts score in windows


def test_bad_dtype_and_missing_model_are_usage_errors(tiny_phi_dir, tmp_path):
    with pytest.raises(UsageError, match="--dtype"):
        HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float8")
    with pytest.raises(UsageError, match="cannot load model"):
        HFModel(str(tmp_path / "nothing-here"), name="x", device="cpu")


def test_auto_batch_size_backs_off_on_out_of_memory(tiny_phi_dir, monkeypatch):
    model = load(tiny_phi_dir, "auto")
    real = model._generate_batch
    sizes = []

    def limited(requests, encoded):  # pretend memory holds at most 5 rows
        sizes.append(len(requests))
        if len(requests) > 5:
            raise torch.OutOfMemoryError("simulated")
        return real(requests, encoded)

    monkeypatch.setattr(model, "_generate_batch", limited)
    requests = humaneval_requests(GenerationConfig(max_new_tokens=8, stop=STOPS), n_docs=12)
    assert texts(model, requests) == texts(load(tiny_phi_dir, 1), requests)
    assert sizes == [12, 6, 3, 3, 3, 3]  # halves the failing batch until it fits, then keeps that size


def test_long_prompts_keep_within_the_context(tmp_path):
    from tiny import make_tiny_phi

    model = load(make_tiny_phi(tmp_path / "short-context", context=64), 4)
    long_prompt = TASKS["humaneval"].load_docs(None)[0]["prompt"] * 3
    (_, completion), = model.generate([GenerationRequest(long_prompt, GenerationConfig(max_new_tokens=500))],
                                      progress=False)
    # Half the context is kept for the prompt (its last 32 tokens); generation stops at the context's end.
    assert completion.finish_reason == "length" and completion.n_tokens == 32
