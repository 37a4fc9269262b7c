"""The two real pretrained models the zoo ships offline (SmolLM2-135M-Instruct, Gemma-3-270M, GGUF files in pip
packages): phi-eval's greedy decoding equals transformers' own `generate`, each model gets the special tokens
lm-eval's HFLM gives it (Gemma its BOS), and log-likelihoods match lm-eval's on a few PIQA items.
Skipped where the packages are not installed. Each model loads once per module (Gemma's takes a minute)."""
from __future__ import annotations

import pytest
import torch

from phi_eval.app.presets import DEFAULT_PRESET, PRESETS
from phi_eval.app.repetition import repetition
from phi_eval.errors import UsageError
from phi_eval.models import load_model
from phi_eval.models.base import GenerationConfig, GenerationRequest
from phi_eval.zoo import parse_model_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TALK = PRESETS[DEFAULT_PRESET].prompt
PROMPTS = [TALK, "def fibonacci(n):", "The capital of France is"]
ADDS_BOS = {"gemma-3-270m": True, "smollm2-135m-instruct": False}  # what each tokenizer (and so HFLM) does


@pytest.fixture(scope="module", params=sorted(ADDS_BOS))
def real_model(request):
    try:
        spec = parse_model_spec(request.param)
    except UsageError as e:  # the package is not installed
        pytest.skip(str(e))
    return load_model(spec, device="cpu", dtype="float32", batch_size=4)


def phi_eval_greedy(model, prompts, max_new_tokens):
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, seed=1234)
    done = dict(model.generate([GenerationRequest(p, config) for p in prompts], progress=False))
    return [done[i].text for i in range(len(prompts))]


def test_special_tokens_follow_the_tokenizer_as_in_lm_eval(real_model):
    ids = real_model._encode(TALK)
    bos = real_model.tokenizer.bos_token_id
    assert (ids[0] == bos) is ADDS_BOS[real_model.identity["name"]]
    assert ids.count(bos) <= 1
    # A text that already starts with the BOS text gets no second one, as in HFLM.tok_encode.
    assert real_model._encode(real_model.tokenizer.decode([bos]) + "Hello").count(bos) == 1


def test_greedy_equals_transformers_generate(real_model):
    ours = phi_eval_greedy(real_model, PROMPTS, max_new_tokens=12)  # one left-padded batch
    tokenizer, model = real_model.tokenizer, real_model.model
    for prompt, text in zip(PROMPTS, ours):
        inputs = tokenizer(prompt, return_tensors="pt")  # the tokenizer's own special tokens
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=real_model.eos_id,
                                 pad_token_id=real_model.pad_id)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        theirs = tokenizer.decode([t for t in new if t != real_model.eos_id], skip_special_tokens=False)
        assert text == theirs, prompt


def test_talk_prompt_gives_a_sentence_not_a_loop(real_model):
    """Without its BOS, Gemma answered the talk's prompt with "do it it it it ..."; a small model may still
    repeat its first sentence later (the talk's point), but that sentence must be one."""
    text = phi_eval_greedy(real_model, [TALK], max_new_tokens=24)[0]
    first = text.strip().splitlines()[0]
    assert len(first.split()) >= 6, text
    assert repetition(first, n=1).score < 0.3, text  # "do it it it it ..." scores near 1


def test_piqa_loglikelihoods_match_lm_eval(real_model, tmp_path):
    from conftest import SHARED_BENCHMARKS
    from test_lm_eval_parity import assert_same, lm_eval_samples, phi_eval_records

    from phi_eval.tasks import TASKS, local_data
    from phi_eval.tasks.multiple_choice import lm_eval_task

    if not SHARED_BENCHMARKS.is_dir() or local_data.load_local("piqa", SHARED_BENCHMARKS) is None:
        pytest.skip("shared benchmarks absent")
    items = 4
    task = TASKS["piqa"]
    docs = task.load_docs(SHARED_BENCHMARKS)[:items]
    ours = phi_eval_records(real_model, task, docs, SHARED_BENCHMARKS, tmp_path)
    splits = {split: rows[:items] for split, rows in local_data.load_local("piqa", SHARED_BENCHMARKS).items()}
    theirs = lm_eval_samples(real_model, [lm_eval_task(task.lm_eval_name, splits)], limit=items)
    # rel=2e-5: a real model's logits are large; a continuation scored on the KV cache of its context
    # (phi-eval) rather than in one pass (lm-eval) differs in float32 rounding, never in the choice made.
    assert_same(ours, theirs[task.lm_eval_name], int, rel=2e-5)
