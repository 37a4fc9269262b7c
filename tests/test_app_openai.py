"""The openai: backend the app streams from, against a small OpenAI-compatible server this test runs on
127.0.0.1: streamed pieces join to generate()'s text, settings reach the server, stops apply even past the
API's four, and server trouble is one clear message."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app_support import compare_args, launched, streamed
from phi_eval.errors import UsageError
from phi_eval.models import GenerationConfig, GenerationRequest, load_model
from phi_eval.zoo import parse_model_spec

WORDS = ["    return", " a", " +", " b", "\n", "\ndef", " other", "(x):", "\n", "    pass"] * 4


class FakeCompletions(BaseHTTPRequestHandler):
    """POST /v1/completions: streams WORDS one per chunk (cut by max_tokens and the stops it is sent), as
    SSE like the OpenAI API, with a usage chunk when asked. A prompt of "fail" gets an HTTP 500."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        if body["prompt"] == "fail":
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "the model crashed", "type": "server_error"}}')
            return
        words, text = WORDS[:body["max_tokens"]], ""
        finish = "length"
        for i, word in enumerate(words):
            if any(s in text + word for s in body.get("stop") or []):
                words, finish = words[:i], "stop"
                break
            text += word
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(words):
            self.event({"choices": [{"index": 0, "text": word,
                                     "finish_reason": finish if i == len(words) - 1 else None}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self.event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words),
                                                 "total_tokens": 3 + len(words)}})
        self.wfile.write(b"data: [DONE]\n\n")

    def event(self, data):
        chunk = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "fake", **data}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def model_at(url):
    return load_model(parse_model_spec(f"openai:fake-model@{url}"))



def test_stream_and_generate_agree_and_settings_reach_the_server(base_url):
    model = model_at(base_url)
    request = GenerationRequest("def add(a, b):\n", GenerationConfig(max_new_tokens=7, temperature=0.5, top_p=0.9,
                                                                    seed=11))
    pieces, completion = streamed(model, request)
    assert len(pieces) > 3 and "".join(pieces) == completion.text == "".join(WORDS[:7])
    assert (completion.finish_reason, completion.n_tokens) == ("length", 7)
    sent = FakeCompletions.requests[-1]
    assert (sent["model"], sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"], sent["stream"]) == \
        ("fake-model", 7, 0.5, 0.9, 11, True)
    [(_, generated)] = list(model.generate([request], progress=False))
    assert generated == completion
    assert model.identity == {"name": "fake-model", "backend": "openai", "model": "fake-model", "base_url": base_url}


def test_stops_past_the_apis_four_are_applied_here(base_url):
    stops = ("\nclass", "\nif", "\nprint", "\n#", " other")  # HumanEval-like: five, the server gets four
    pieces, completion = streamed(model_at(base_url),
                                  GenerationRequest("x", GenerationConfig(max_new_tokens=40, stop=stops)))
    assert FakeCompletions.requests[-1]["stop"] == list(stops[:4])
    assert completion.text == "    return a + b\n\ndef" and completion.finish_reason == "stop"
    assert "".join(pieces) == completion.text  # the streamed text never showed what the stop cut


def test_server_trouble_is_one_clear_message(base_url):
    with pytest.raises(UsageError, match="answered 500"):
        streamed(model_at(base_url), GenerationRequest("fail", GenerationConfig(max_new_tokens=4)))
    with pytest.raises(UsageError, match="cannot reach the openai: endpoint http://127.0.0.1:9/v1"):
        streamed(model_at("http://127.0.0.1:9/v1"), GenerationRequest("x", GenerationConfig(max_new_tokens=4)))


def test_the_app_streams_an_openai_side_next_to_a_local_model(base_url, tiny_phi_dir):
    from gradio_client import Client

    from phi_eval.app import page as app

    specs = [f"openai:fake-model@{base_url}", f"hf:{tiny_phi_dir}"]
    with launched(app.build(specs)) as url:
        record = Client(url, verbose=False).predict(*compare_args(specs, "def add(a, b):\n", max_tokens=5),
                                                    api_name="/compare")[-1]
    remote, local = record["sides"]
    assert (remote["status"], local["status"]) == ("done", "done")
    assert remote["completion"] == "".join(WORDS[:5]) and remote["model"]["backend"] == "openai"
    assert remote["metrics"]["output_tokens"] == 5
