"""The gguf: backend on a real GGUF file: a tiny random Llama written with the `gguf` package as llama.cpp
writes one, loaded through phi-eval, must compute what the original transformers model computes."""
import copy

import pytest
import torch

from phi_eval.models import load_model
from phi_eval.models.base import GenerationConfig, GenerationRequest
from phi_eval.zoo import parse_model_spec

pytest.importorskip("gguf")

PROMPTS = ["def add(a, b):", "import os\n\nclass Stack:\n    def push(self, item):", "x"]
SNIPPET = 'def f(xs: list[int]) -> dict:\n\t"""Döcs — ünïcode."""\n    return {x: x ** 2 for x in xs}  # <|endoftext|>\n'


@pytest.fixture(scope="module")
def tiny_llama():
    from gguf_fixture import make_tiny_llama

    return make_tiny_llama()


@pytest.fixture(scope="module", params=["F32", "F16"])
def llama_gguf(request, tiny_llama, tmp_path_factory):
    """(reference model, tokenizer, gguf path, hf dir): the reference holds exactly the weights the file stores."""
    from gguf_fixture import write_llama_gguf

    model, tokenizer = tiny_llama
    if request.param == "F16":
        model = copy.deepcopy(model)
        with torch.no_grad():  # what an F16 file can hold: matrices rounded to half precision, norms kept F32
            for param in model.parameters():
                if param.ndim > 1:
                    param.copy_(param.half().float())
    root = tmp_path_factory.mktemp(f"gguf-{request.param}")
    (root / "gguf").mkdir()
    path = write_llama_gguf(model, tokenizer, root / "gguf" / "tiny-llama.gguf", float_type=request.param)
    model.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    return model, tokenizer, path, root / "hf"


def load_gguf(path):
    return load_model(parse_model_spec(f"gguf:{path}"), device="cpu", dtype="float32", batch_size=4)


def completions(model, config):
    done = dict(model.generate([GenerationRequest(p, config) for p in PROMPTS], progress=False))
    return [done[i] for i in range(len(PROMPTS))]


def test_file_is_in_llama_cpp_layout(llama_gguf):
    """The fixture writes q/k permuted for llama.cpp's rotary layout, so loading has to undo it."""
    from gguf import GGUFReader

    model, _, path, _ = llama_gguf
    reader = GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.model"] == "gpt2"
    stored = {t.name: torch.from_numpy(t.data.copy()).float() for t in reader.tensors}
    q = model.model.layers[0].self_attn.q_proj.weight
    assert stored["blk.0.attn_q.weight"].shape == q.shape
    assert not torch.equal(stored["blk.0.attn_q.weight"], q)  # permuted rows ...
    assert torch.equal(stored["blk.0.attn_q.weight"].sum(1).sort().values, q.sum(1).sort().values)  # ... of q
    assert torch.equal(stored["blk.0.attn_v.weight"], model.model.layers[0].self_attn.v_proj.weight)


def test_gguf_tokenizer_matches_the_original(llama_gguf):
    _, tokenizer, path, _ = llama_gguf
    loaded = load_gguf(path).tokenizer
    for text in [SNIPPET, *PROMPTS, " leading space", "\n\n\n    "]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert loaded(text, add_special_tokens=False)["input_ids"] == ids
        assert loaded.decode(ids) == tokenizer.decode(ids) == text
    assert loaded(SNIPPET)["input_ids"] == tokenizer(SNIPPET, add_special_tokens=False)["input_ids"]  # no BOS added
    assert (loaded.eos_token_id, loaded.bos_token_id) == (tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert len(loaded) == len(tokenizer)


def test_gguf_logits_match_the_original(llama_gguf):
    model, tokenizer, path, _ = llama_gguf
    loaded = load_gguf(path)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.model.dtype == torch.float32 and loaded.parameters == model.num_parameters()
    ids = torch.tensor([tokenizer(SNIPPET, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected, got = model(ids).logits, loaded.model(ids).logits
    assert expected.abs().max() > 0.1  # not a degenerate model
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_gguf_generation_and_loglikelihood_match_the_hf_checkpoint(llama_gguf):
    _, _, path, hf_dir = llama_gguf
    gguf_model = load_gguf(path)
    hf_model = load_model(parse_model_spec(f"hf:{hf_dir}"), device="cpu", dtype="float32", batch_size=4)
    config = GenerationConfig(max_new_tokens=12)
    got, expected = completions(gguf_model, config), completions(hf_model, config)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.n_tokens for c in got] == [c.n_tokens for c in expected]
    assert any(c.n_tokens > 1 for c in expected)  # the comparison is not vacuous
    first = dict(gguf_model.generate([GenerationRequest("def add(a, b):", config)], progress=False))[0].text
    assert first == expected[0].text

    pairs = [("def add(a, b):", "\n    return a + b"), ("", "import os"), ("x = ", "1")]
    for (got_ll, got_greedy), (want_ll, want_greedy) in zip(gguf_model.loglikelihood(pairs, progress=False),
                                                            hf_model.loglikelihood(pairs, progress=False)):
        assert got_ll == pytest.approx(want_ll, abs=1e-4) and got_greedy == want_greedy


def test_gguf_identity(llama_gguf):
    _, _, path, _ = llama_gguf
    identity = load_gguf(path).identity
    assert identity["backend"] == "hf"
    assert identity["gguf_file"] == path.name
    assert identity["target"] == str(path.parent.resolve())
    assert identity["dtype"] == "float32" and identity["device_type"] == "cpu"
    assert len(identity["revision"]) == 16  # content hash of the directory, the .gguf included
