"""The openai: backend against `phi-eval serve` on 127.0.0.1 (and small fake servers for what serve does not
do): `phi-eval run` through it equals the hf: backend on the same model, log-likelihoods from echoed
prompt log-probabilities equal HFModel's, requests run concurrently and each result is cached as it
arrives, failures are retried, a server without prompt log-probabilities is one clear error, and the API
key reaches no output."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SHARED_BENCHMARKS
from phi_eval.cli import main
from phi_eval.errors import UsageError
from phi_eval.models import GenerationConfig, GenerationRequest, load_model
from phi_eval.models.hf import HFModel
from phi_eval.serve import start_server
from phi_eval.steps import generate_with_cache
from phi_eval.zoo import parse_model_spec

SECRET = "sk-phi-eval-test-0123456789abcdef"
PAIRS = [("Question: what is 2 + 2?\nAnswer:", " 4"), ("def add(a, b):\n", "    return a + b"),
         ("The sky is ", "blue and wide."), ("x = [1, 2,", " 3]"), ("import os", "\nimport sys\n")]


@pytest.fixture(scope="module")
def hf_model(tiny_phi_dir):
    return HFModel(str(tiny_phi_dir), name="tiny", device="cpu")


@pytest.fixture(scope="module")
def server(hf_model):
    with start_server(hf_model, name="tiny") as running:
        yield running


def api_model(base_url, name="tiny"):
    return load_model(parse_model_spec(f"openai:{name}@{base_url}"))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def samples(out_dir, task):
    [model_dir] = list(out_dir.iterdir())
    return [json.loads(line) for line in (model_dir / f"samples_{task}.jsonl").open()]


def test_humaneval_through_serve_equals_the_hf_backend_and_hides_the_key(tiny_phi_dir, server, tmp_path, phi_home,
                                                                        capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    common = ["--tasks", "humaneval", "--limit", "3", "--max-new-tokens", "48", "--workers", "2"]
    code, _, err = run_cli(capsys, "run", "--models", f"openai:tiny@{server.base_url}", *common,
                           "--out", str(tmp_path / "api"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", "--models", f"hf:{tiny_phi_dir}", "--device", "cpu", *common,
                           "--out", str(tmp_path / "local"))
    assert code == 0, err
    remote, local = samples(tmp_path / "api", "humaneval"), samples(tmp_path / "local", "humaneval")
    assert [r["completion"] for r in remote] == [r["completion"] for r in local]
    assert len(remote) == 3 and any(r["completion"] for r in remote)
    for path in (tmp_path / "api").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in capsys.readouterr().out


def test_loglikelihood_from_echoed_logprobs_equals_hf(hf_model, server):
    remote = api_model(server.base_url).loglikelihood(PAIRS, progress=False)
    local = hf_model.loglikelihood(PAIRS, progress=False)
    for (remote_total, remote_greedy), (local_total, local_greedy) in zip(remote, local):
        assert remote_total == pytest.approx(local_total, abs=1e-4)
        assert remote_greedy == local_greedy
    texts = ["def add(a, b):\n    return a + b\n", "hello world"]
    rolling = api_model(server.base_url).loglikelihood_rolling(texts, progress=False)
    # The server gives a text's first token no log-probability: everything after it matches.
    for text, total in zip(texts, rolling):
        ids = hf_model.tokenizer(text, add_special_tokens=False)["input_ids"]
        first = hf_model.tokenizer.decode(ids[:1])
        [(expected, _)] = hf_model.loglikelihood([(first, text[len(first):])], progress=False)
        assert total == pytest.approx(expected, abs=1e-4)


def test_a_text_past_the_context_is_one_clear_error(server):
    with pytest.raises(UsageError, match="a scored text is longer than the model's context"):
        api_model(server.base_url).loglikelihood([("x = 1\n" * 1500, " y")], progress=False)


def test_generation_is_concurrent_and_each_result_is_cached_as_it_arrives(hf_model, server, monkeypatch):
    monkeypatch.setenv("PHI_EVAL_OPENAI_CONCURRENCY", "4")
    model = api_model(server.base_url)
    assert model.concurrency == 4
    config = GenerationConfig(max_new_tokens=10, temperature=0.0)
    requests = [GenerationRequest(f"def f{i}(x):\n", config) for i in range(8)]

    class RecordingCache:
        def __init__(self):
            self.puts = []

        def get_many(self, namespace, keys):
            return {}

        def put(self, namespace, key, value):
            self.puts.append((key, value["text"]))

    cache = RecordingCache()
    results = generate_with_cache(model, requests, cache, progress=False)
    expected = dict(hf_model.generate(requests, progress=False))
    assert [r["text"] for r in results] == [expected[i].text for i in range(8)]
    assert len(cache.puts) == 8 and {text for _, text in cache.puts} == {e.text for e in expected.values()}


def test_chat_endpoint_for_chat_only_models(hf_model, server, monkeypatch):
    from phi_eval.models.openai_api import OpenAIModel

    assert OpenAIModel("gpt-4", name="gpt-4").chat and OpenAIModel("gpt-3.5-turbo", name="g").chat
    assert not OpenAIModel("gpt-3.5-turbo-instruct", name="g").chat
    assert not OpenAIModel("gpt-4", name="g", base_url="http://127.0.0.1:9/v1").chat  # another server: as said
    monkeypatch.setenv("PHI_EVAL_OPENAI_ENDPOINT", "chat")
    model = api_model(server.base_url)
    assert model.identity["endpoint"] == "chat"
    request = GenerationRequest("Add two numbers.", GenerationConfig(max_new_tokens=8, temperature=0.0))
    [(_, completion)] = list(model.generate([request], progress=False))
    config = GenerationConfig(max_new_tokens=8, temperature=0.0, stop=("\nUser:", "\nSystem:"))
    [(_, expected)] = list(hf_model.generate([GenerationRequest("User: Add two numbers.\nAssistant:", config)],
                                             progress=False))
    assert completion.text == expected.text
    with pytest.raises(UsageError, match="cannot score log-likelihood tasks: it is used through the chat"):
        model.loglikelihood(PAIRS[:1], progress=False)
    monkeypatch.setenv("PHI_EVAL_OPENAI_ENDPOINT", "chatty")
    with pytest.raises(UsageError, match="must be chat or completions"):
        api_model(server.base_url)


class NoLogprobs(BaseHTTPRequestHandler):
    """A completions server that ignores echo and logprobs, as many hosted APIs do; the first `failures`
    requests get a 429 (retry after 10 ms)."""

    failures = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if NoLogprobs.failures > 0:
            NoLogprobs.failures -= 1
            self.reply(429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, {"retry-after-ms": "10"})
            return
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                     "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            return
        self.reply(200, {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [
            {"index": i, "text": " ok", "finish_reason": "length", "logprobs": None} for i in range(len(prompts))]})

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in dict(headers).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NoLogprobs)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


def test_a_server_without_prompt_logprobs_is_one_clear_error(plain_server):
    with pytest.raises(UsageError) as caught:
        api_model(plain_server, "m").loglikelihood(PAIRS, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "cannot score log-likelihood tasks" in message
    assert "arc_easy" in message and "phi-eval serve" in message


def run_served_and_local(capsys, tmp_path, server, model_dir, task, *options):
    """The samples of one task run through serve (openai:) and in-process (hf:) on the same model."""
    common = ["--tasks", task, *options, "--data-dir", str(SHARED_BENCHMARKS)]
    for spec, out in ((f"openai:tiny@{server.base_url}", "api"), (f"hf:{model_dir}", "local")):
        code, _, err = run_cli(capsys, "run", "--models", spec, "--device", "cpu", *common, "--out", str(tmp_path / out))
        assert code == 0, err
    return samples(tmp_path / "api", task), samples(tmp_path / "local", task)


@pytest.mark.skipif(not (SHARED_BENCHMARKS / "arc").is_dir(), reason="needs ../shared/benchmarks")
def test_a_multiple_choice_run_against_it_stops_with_one_line(plain_server, tmp_path, phi_home, capsys):
    code, _, err = run_cli(capsys, "run", "--models", f"openai:m@{plain_server}", "--tasks", "arc_easy",
                           "--limit", "2", "--data-dir", str(SHARED_BENCHMARKS), "--out", str(tmp_path / "out"))
    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("phi-eval: error:")]
    assert "cannot score log-likelihood tasks" in line and "Traceback" not in err


def test_lm_evals_own_api_client_reads_the_same_loglikelihoods(tiny_phi_dir, hf_model, server):
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(model="tiny", base_url=f"{server.base_url}/completions", tokenizer=str(tiny_phi_dir),
                             batch_size=4, max_retries=0, max_length=2048)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in PAIRS]
    theirs = lm.loglikelihood(requests, disable_tqdm=True)
    for (their_total, their_greedy), (total, greedy) in zip(theirs, hf_model.loglikelihood(PAIRS, progress=False)):
        assert their_total == pytest.approx(total, abs=1e-4) and their_greedy == greedy


def test_rate_limits_are_retried(plain_server, monkeypatch):
    request = GenerationRequest("x", GenerationConfig(max_new_tokens=2))
    NoLogprobs.failures = 2
    [(_, completion)] = list(api_model(plain_server, "m").generate([request], progress=False))
    assert completion.text == " ok"
    monkeypatch.setenv("PHI_EVAL_OPENAI_RETRIES", "0")
    NoLogprobs.failures = 1
    with pytest.raises(UsageError, match="answered 429"):
        list(api_model(plain_server, "m").generate([request], progress=False))


@pytest.mark.skipif(not (SHARED_BENCHMARKS / "arc").is_dir(), reason="needs ../shared/benchmarks")
def test_a_multiple_choice_task_through_serve_equals_the_hf_backend(tiny_phi_dir, server, tmp_path, phi_home,
                                                                    capsys):
    remote, local = run_served_and_local(capsys, tmp_path, server, tiny_phi_dir, "arc_easy", "--limit", "4")
    assert len(remote) == 4
    for r, l in zip(remote, local):
        assert (r["prediction"], r["prediction_norm"]) == (l["prediction"], l["prediction_norm"])
        assert r["loglikelihoods"] == pytest.approx(l["loglikelihoods"], abs=1e-4)


@pytest.mark.skipif(not (SHARED_BENCHMARKS / "gsm8k").is_dir(), reason="needs ../shared/benchmarks")
def test_gsm8k_through_serve_equals_the_hf_backend(tiny_phi_dir, server, tmp_path, phi_home, capsys):
    remote, local = run_served_and_local(capsys, tmp_path, server, tiny_phi_dir, "gsm8k", "--limit", "2",
                                         "--max-new-tokens", "24")
    assert len(remote) == 2
    assert [r["completion"] for r in remote] == [r["completion"] for r in local]
