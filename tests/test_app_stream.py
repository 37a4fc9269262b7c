"""HFModel.stream, which the app's side-by-side view streams from: its pieces join to exactly the text
generate() returns for the same request (greedy and seeded sampling, stops, end of text, max tokens)."""
import pytest

from app_support import streamed
from phi_eval.models.base import GenerationConfig, GenerationRequest, unsettled_tail
from phi_eval.models.hf import HFModel
from phi_eval.tasks import TASKS

STOPS = TASKS["humaneval"].stop


@pytest.fixture(scope="module")
def model(tiny_phi_dir):
    return HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float32", batch_size=8)


def prompts(n=12):
    return [doc["prompt"] for doc in TASKS["humaneval"].load_docs(None)[:n]]



def check_equal_to_generate(model, requests):
    generated = dict(model.generate(requests, progress=False))
    for i, request in enumerate(requests):
        pieces, completion = streamed(model, request)
        assert "".join(pieces) == generated[i].text
        assert completion == generated[i]
        assert all(pieces)  # no empty pieces
    return generated


@pytest.mark.parametrize("config", [
    GenerationConfig(max_new_tokens=48, stop=STOPS),
    GenerationConfig(max_new_tokens=64, temperature=1.0, seed=3),  # sampled; several rows end at end of text
    GenerationConfig(max_new_tokens=40, temperature=0.8, top_p=0.9, seed=7, stop=STOPS),
], ids=["greedy-stops", "sampled-eos", "sampled-top-p-stops"])
def test_stream_equals_generate(model, config):
    generated = check_equal_to_generate(model, [GenerationRequest(p, config) for p in prompts()])
    reasons = {c.finish_reason for c in generated.values()}
    if config.temperature == 1.0:
        assert reasons == {"stop", "length"}  # end of text and max tokens both covered


def test_stream_holds_back_a_stop_sequence_until_it_is_settled(model):
    prompt = prompts(1)[0]
    free = streamed(model, GenerationRequest(prompt, GenerationConfig(max_new_tokens=40)))[1].text
    stop = free[20:24]  # a piece of the free-running output: the stream must end just before it
    pieces, completion = streamed(model, GenerationRequest(prompt, GenerationConfig(max_new_tokens=40, stop=(stop,))))
    assert completion.finish_reason == "stop" and "".join(pieces) == completion.text == free[:free.index(stop)]
    assert len(pieces) > 5  # really streamed, not one piece at the end


def test_stream_stops_at_max_tokens(model):
    _, completion = streamed(model, GenerationRequest(prompts(1)[0], GenerationConfig(max_new_tokens=5)))
    assert (completion.finish_reason, completion.n_tokens) == ("length", 5)


def testunsettled_tail():
    assert unsettled_tail("return x\nde", ["\ndef", "\nclass"]) == 3
    assert unsettled_tail("return x\n", ["\ndef", "\nclass"]) == 1
    assert unsettled_tail("return x", ["\ndef"]) == 0
    assert unsettled_tail("caf\ufffd", []) == 1
