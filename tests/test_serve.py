"""phi-eval serve: the real `openai` client against the server on 127.0.0.1 over a tiny model. Served
completions equal HFModel's, echoed prompt log-probabilities equal its own scoring, streams join to the
non-streamed text, bad requests get OpenAI's error body, and clients at once get what they get alone."""
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from phi_eval.errors import UsageError
from phi_eval.models import GenerationConfig, GenerationRequest
from phi_eval.models.hf import HFModel
from phi_eval.serve import load_local_model, start_server
from phi_eval.serve.protocol import Message, chat_prompt

PROMPTS = ["def add(a, b):\n", "import os\n\nclass Stack:\n    def push(self, item):"]
STOPS = ["\ndef", "\nclass"]


@pytest.fixture(scope="module")
def model(tiny_phi_dir):
    return HFModel(str(tiny_phi_dir), name="tiny", device="cpu")


@pytest.fixture(scope="module")
def server(model):
    with start_server(model, name="tiny") as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)


def hf_completions(model, prompts, **settings):
    config = GenerationConfig(**settings)
    requests = [GenerationRequest(p, config) for p in prompts]
    results = dict(model.generate(requests, progress=False))
    return [results[i] for i in range(len(prompts))]


def test_models_lists_the_served_name(client, server):
    [card] = client.models.list().data
    assert card.id == server.model_name == "tiny" and server.base_url.startswith("http://127.0.0.1:")


def test_greedy_completions_equal_hf_generate(client, model):
    response = client.completions.create(model="tiny", prompt=PROMPTS, max_tokens=24, temperature=0, stop=STOPS)
    expected = hf_completions(model, PROMPTS, max_new_tokens=24, temperature=0.0, stop=tuple(STOPS))
    assert [c.text for c in response.choices] == [e.text for e in expected]
    assert [c.finish_reason for c in response.choices] == [e.finish_reason for e in expected]
    assert response.usage.completion_tokens == sum(e.n_tokens for e in expected)
    assert response.usage.prompt_tokens == sum(len(model._encode(p)) for p in PROMPTS)


def test_seeded_samples_equal_hf_and_repeat(client, model):
    settings = dict(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0.8, top_p=0.9, seed=7, n=2)
    first, again = client.completions.create(**settings), client.completions.create(**settings)
    config = GenerationConfig(max_new_tokens=16, temperature=0.8, top_p=0.9, seed=7)
    expected = dict(model.generate([GenerationRequest(PROMPTS[0], config, sample_index=j) for j in range(2)],
                                   progress=False))
    assert [c.text for c in first.choices] == [c.text for c in again.choices] == [expected[0].text, expected[1].text]


def test_stream_joins_to_the_completion_and_reports_usage(client):
    plain = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=20, temperature=0, stop=STOPS)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=20, temperature=0,
                                            stop=STOPS, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 2 and "".join(texts) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_echo_returns_the_prompts_token_logprobs(client, model):
    prompt = "def add(a, b):\n    return a + b\n"
    response = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    [choice] = response.choices
    logprobs = choice.logprobs
    assert choice.text == prompt and "".join(logprobs.tokens) == prompt
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:k]) for k in range(len(logprobs.tokens))]
    ids = model._encode(prompt)
    assert len(logprobs.tokens) == len(ids) == response.usage.prompt_tokens
    # Each token's log-prob is the transformers model's, given the tokens before it.
    with torch.no_grad():
        expected = torch.log_softmax(model.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    for k in range(1, len(ids)):
        assert logprobs.token_logprobs[k] == pytest.approx(float(expected[k - 1, ids[k]]), abs=1e-4)
        assert len(logprobs.top_logprobs[k]) == 2
        assert max(logprobs.top_logprobs[k].values()) == pytest.approx(float(expected[k - 1].max()), abs=1e-4)


def test_token_id_prompts_are_scored_as_sent(client, model):
    ids = model._encode(PROMPTS[0])
    response = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    by_text = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=0, echo=True, logprobs=0)
    assert response.choices[0].logprobs.token_logprobs == pytest.approx(by_text.choices[0].logprobs.token_logprobs)


def test_generated_tokens_logprobs_are_greedy_and_join_to_the_text(client):
    response = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=8, temperature=0, logprobs=3)
    [choice] = response.choices
    logprobs = choice.logprobs
    # The generated tokens themselves (a random model emits broken UTF-8, which does not re-tokenize).
    assert len(logprobs.tokens) == response.usage.completion_tokens == 8
    assert logprobs.text_offset[0] == len(PROMPTS[0])
    for value, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert value == pytest.approx(max(top.values()), abs=1e-5)  # greedy picks the top token
    streamed = [c for c in client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=8, temperature=0,
                                                     logprobs=3, stream=True) if c.choices and c.choices[0].logprobs]
    assert [c.choices[0].logprobs.token_logprobs[0] for c in streamed] == pytest.approx(logprobs.token_logprobs)
    assert "".join(c.choices[0].text for c in streamed) == choice.text


def test_chat_uses_the_plain_transcript_and_equals_hf(client, model):
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Add two numbers."}]
    response = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    prompt, stops = chat_prompt(model.tokenizer, [Message(**m) for m in messages])
    assert prompt == "System: You write Python.\nUser: Add two numbers.\nAssistant:"
    [expected] = hf_completions(model, [prompt], max_new_tokens=12, temperature=0.0, stop=stops)
    message = response.choices[0].message
    assert (message.role, message.content) == ("assistant", expected.text)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    scored = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0,
                                            logprobs=True, top_logprobs=2)
    entries = scored.choices[0].logprobs.content
    assert len(entries) == scored.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob == pytest.approx(e.top_logprobs[0].logprob, abs=1e-5)
               for e in entries)


def test_chat_template_is_used_when_the_tokenizer_has_one(model):
    class Templated:
        chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"

        def apply_chat_template(self, turns, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "".join(f"<|{t['role']}|>{t['content']}\n" for t in turns) + "<|assistant|>"

    prompt, stops = chat_prompt(Templated(), [Message(role="user", content=[{"type": "text", "text": "hi"}])])
    assert (prompt, stops) == ("<|user|>hi\n<|assistant|>", ())


@pytest.mark.parametrize("settings, status, param, code", [
    ({"temperature": 5}, 400, "temperature", None),
    ({"model": "gpt-9"}, 404, "model", "model_not_found"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ({"max_tokens": 5000}, 400, "prompt", "context_length_exceeded"),
    ({"prompt": [[1, 2], [10**9]]}, 400, "prompt", None),
    ({"prompt": []}, 400, "prompt", None),
    ({"n": 0}, 400, "n", None),
    ({"logprobs": 50}, 400, "logprobs", None),
    ({"frequency_penalty": 0.5}, 400, "frequency_penalty", None),
])
def test_bad_completion_requests_get_openai_errors(client, settings, status, param, code):
    request = {"model": "tiny", "prompt": "x", "max_tokens": 4, **settings}
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(**request)
    error = caught.value
    assert error.status_code == status
    assert error.body["type"] == "invalid_request_error" and error.body["param"] == param
    assert error.body["code"] == code and error.body["message"]


def test_bad_chat_requests_and_raw_http_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "hi"}])
    root = server.base_url
    broken = httpx.post(f"{root}/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    missing = httpx.get(f"{root}/engines")
    assert (broken.status_code, missing.status_code) == (400, 404)
    for response in (broken, missing):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_clients_at_once_get_what_they_get_alone(server, model):
    def ask(k):
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        prompt = PROMPTS[k % 2] + " " * (k // 2)
        if k % 3 == 0:
            chunks = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True)
            return prompt, "".join(c.choices[0].text for c in chunks if c.choices)
        response = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
        return prompt, response.choices[0].text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(8)))
    for prompt, text in answers:
        [expected] = hf_completions(model, [prompt], max_new_tokens=12, temperature=0.0)
        assert text == expected.text


def test_only_local_models_are_served(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "pass"}) + "\n")
    with pytest.raises(UsageError, match="needs a local model"):
        load_local_model(f"replay:{samples}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_serve_command(tiny_phi_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PHI_EVAL_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([sys.executable, "-m", "phi_eval.cli", "serve", f"hf:{tiny_phi_dir}", "--port",
                                str(port), "--name", "local", "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                assert [m.id for m in client.models.list().data] == ["local"]
                break
            except openai.APIConnectionError:
                assert process.poll() is None and time.time() < deadline, process.stdout.read()
                time.sleep(0.2)
        response = client.completions.create(model="local", prompt="def", max_tokens=3, temperature=0)
        assert response.usage.completion_tokens == 3
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"local at http://127.0.0.1:{port}/v1" in output
