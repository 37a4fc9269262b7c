"""annotate and synthesize through the real `openai` client against a local OpenAI-compatible server.

`phi-eval serve` over a tiny random Phi is the real local endpoint (its grades are noise: the
test checks the plumbing). `FakeEndpoint` is a small scripted server (replies, failures of the
first N requests, delays, usage tokens, a count of requests in flight) so that retries,
concurrency, caching and cost accounting can be checked exactly, which a real model cannot script.
"""
from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from phi_eval.data.annotate import FIELDS as ANNOTATE_FIELDS, parse_score, run_annotate
from phi_eval.data.stage import validate
from phi_eval.data.synthesize import AUDIENCES, EXERCISE, TOPICS, FIELDS as SYNTH_FIELDS, constraints, run_synthesize
from phi_eval.errors import UsageError

STDLIB = Path(sysconfig.get_paths()["stdlib"])


class FakeEndpoint:
    """/v1/chat/completions and /v1/completions; `reply(prompt) -> str` decides the answer."""

    def __init__(self, reply=lambda prompt: "7", fail_first: int = 0, fail_status: int = 500, delay: float = 0.0,
                 prompt_tokens: int = 100, completion_tokens: int = 2):
        self.reply, self.fail_first, self.fail_status, self.delay = reply, fail_first, fail_status, delay
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens
        self.requests, self.in_flight, self.max_in_flight = 0, 0, 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint.requests += 1
                    number = endpoint.requests
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                    endpoint.bodies.append(body)
                    endpoint.headers.append({k.lower(): v for k, v in self.headers.items()})
                try:
                    time.sleep(endpoint.delay)
                    if number <= endpoint.fail_first:
                        return self.send(endpoint.fail_status, {"error": {"message": "scripted failure"}})
                    if self.path.endswith("/chat/completions"):
                        prompt = body["messages"][-1]["content"]
                        choice = {"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": endpoint.reply(prompt)}}
                        kind = "chat.completion"
                    else:
                        prompt = body["prompt"]
                        choice = {"index": 0, "finish_reason": "stop", "text": endpoint.reply(prompt)}
                        kind = "text_completion"
                    self.send(200, {"id": f"x{number}", "object": kind, "created": 0, "model": body["model"],
                                    "choices": [choice],
                                    "usage": {"prompt_tokens": endpoint.prompt_tokens,
                                              "completion_tokens": endpoint.completion_tokens,
                                              "total_tokens": endpoint.prompt_tokens + endpoint.completion_tokens}})
                finally:
                    with endpoint._lock:
                        endpoint.in_flight -= 1

            def send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    servers = []

    def start(**kwargs) -> FakeEndpoint:
        servers.append(FakeEndpoint(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def write_corpus(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def stdlib_corpus(path: Path, count: int) -> Path:
    files = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    texts = [f.read_text() for f in files][:count]
    return write_corpus(path, texts)


def annotate_settings(base_url: str, **extra) -> dict:
    return validate(ANNOTATE_FIELDS, {"annotator": "llm", "model": "grader", "base_url": base_url,
                                      "backoff_seconds": 0.01, **extra}, "--")


# ------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("answer, score", [
    ("7", 7.0), ("Score: 8/10", 8.0), ("**9**", 9.0), ("I would rate it 6 out of 10.", 6.0),
    ("Educational value: 3", 3.0), ("seven", 7.0), ("10\n", 10.0), ("0", 0.0), ("4.5", 4.5),
    ("", None), ("no idea", None), ("42", None), ("Score: 12", None), (None, None),
])
def test_parse_score(answer, score):
    assert parse_score(answer) == score


# ------------------------------------------------------------------------------- annotate

def test_annotate_llm_concurrency_cache_and_cost(tmp_path, phi_home, endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    replies = iter(["7", "Score: 3/10", "not a number"] * 100)
    lock = threading.Lock()

    def reply(prompt):
        with lock:
            return next(replies)

    server = endpoint(reply=reply, delay=0.05)
    corpus = stdlib_corpus(tmp_path / "corpus.jsonl", 24)
    settings = annotate_settings(server.base_url, concurrency=6, price_per_1k_input=0.5, price_per_1k_output=1.5)
    manifest = run_annotate(settings, corpus, tmp_path / "ann.jsonl", show_progress=False)

    assert server.requests == 24 and 2 <= server.max_in_flight <= 6
    assert manifest["counts"] == {"documents": 24, "annotated": 24, "unparsable": 8, "errors": 0}
    usage = manifest["usage"]
    assert usage["requests"] == 24 and usage["prompt_tokens"] == 2400 and usage["completion_tokens"] == 48
    assert usage["cost_usd"] == pytest.approx(2400 / 1000 * 0.5 + 48 / 1000 * 1.5)
    records = [json.loads(line) for line in (tmp_path / "ann.jsonl").read_text().splitlines()]
    assert {r["edu_score"] for r in records} == {7.0, 3.0, None}
    assert all(r["edu_annotator"] == "llm:grader" for r in records)
    prompt = server.bodies[0]["messages"][0]["content"]
    assert "educational value for a student whose goal is to learn basic coding concepts" in prompt
    assert server.headers[0]["authorization"] == "Bearer sk-test-secret-123"
    # the key is read from the environment and written nowhere
    for path in [tmp_path / "ann.jsonl", tmp_path / "ann.manifest.json", *phi_home.rglob("*")]:
        if path.is_file():
            assert b"sk-test-secret-123" not in path.read_bytes(), path

    # same inputs and settings: skipped; other settings (a sample) but same requests: all from the cache
    again = run_annotate(settings, corpus, tmp_path / "ann.jsonl", show_progress=False)
    assert again["skipped"] and server.requests == 24
    sampled = run_annotate({**settings, "sample_size": 10}, corpus, tmp_path / "sample.jsonl", show_progress=False)
    assert server.requests == 24 and sampled["usage"]["cached"] == 10 and sampled["usage"]["requests"] == 0
    assert sampled["counts"]["annotated"] == 10 and sampled["usage"]["cost_usd"] == 0


def test_annotate_retries_failing_server(tmp_path, phi_home, endpoint):
    server = endpoint(fail_first=3, fail_status=503)
    corpus = write_corpus(tmp_path / "c.jsonl", ["def f():\n    return 1\n"] * 2 + ["x = 1\n"])
    manifest = run_annotate(annotate_settings(server.base_url, concurrency=1), corpus, tmp_path / "a.jsonl",
                            show_progress=False)
    assert manifest["usage"]["retries"] == 3 and manifest["usage"]["requests"] == 3 + 2  # 2 distinct texts
    assert manifest["usage"]["cached"] == 1 and manifest["counts"]["annotated"] == 3


def test_annotate_gives_up_then_resumes(tmp_path, phi_home, endpoint):
    server = endpoint(fail_first=1000, fail_status=429)
    corpus = write_corpus(tmp_path / "c.jsonl", [f"print({i})\n" for i in range(3)])
    settings = annotate_settings(server.base_url, max_retries=1, concurrency=2)
    with pytest.raises(UsageError, match="3 documents could not be graded after 1 retries.*rerun"):
        run_annotate(settings, corpus, tmp_path / "a.jsonl", show_progress=False)
    assert not (tmp_path / "a.manifest.json").exists()
    server.fail_first = 0
    manifest = run_annotate(settings, corpus, tmp_path / "a.jsonl", show_progress=False)
    assert manifest["counts"]["annotated"] == 3


def test_annotate_stops_on_bad_model_or_key(tmp_path, phi_home, endpoint, monkeypatch):
    server = endpoint(fail_first=10, fail_status=401)
    corpus = write_corpus(tmp_path / "c.jsonl", ["print(1)\n"])
    with pytest.raises(UsageError, match="refused the key"):
        run_annotate(annotate_settings(server.base_url), corpus, tmp_path / "a.jsonl", show_progress=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match=r"\$OPENAI_API_KEY is not set"):
        run_annotate(validate(ANNOTATE_FIELDS, {"model": "gpt-4o-mini"}, "--"), corpus, tmp_path / "b.jsonl",
                     show_progress=False)


def test_rate_limit_spaces_requests(tmp_path, phi_home, endpoint):
    server = endpoint()
    corpus = write_corpus(tmp_path / "c.jsonl", [f"print({i})\n" for i in range(4)])
    start = time.monotonic()
    run_annotate(annotate_settings(server.base_url, requests_per_minute=600, concurrency=4), corpus,
                 tmp_path / "a.jsonl", show_progress=False)
    assert time.monotonic() - start >= 3 * 0.1 and server.requests == 4  # 600/min: starts 0.1 s apart


def test_completions_api(tmp_path, phi_home, endpoint):
    server = endpoint(reply=lambda prompt: " 5")
    corpus = write_corpus(tmp_path / "c.jsonl", ["print(1)\n"])
    run_annotate(annotate_settings(server.base_url, api="completions"), corpus, tmp_path / "a.jsonl",
                 show_progress=False)
    assert "prompt" in server.bodies[0]
    assert json.loads((tmp_path / "a.jsonl").read_text())["edu_score"] == 5.0


def test_annotate_resumes_after_kill_9(tmp_path, phi_home, endpoint):
    import sqlite3
    import subprocess

    server = endpoint(delay=0.15)
    corpus = write_corpus(tmp_path / "c.jsonl", [f"def f{i}():\n    return {i}\n" for i in range(30)])
    out = tmp_path / "a.jsonl"
    command = [sys.executable, "-m", "phi_eval.cli", "data", "annotate", "--input", str(corpus), "--out", str(out),
               "--annotator", "llm", "--model", "grader", "--base-url", server.base_url, "--concurrency", "1",
               "--no-cache", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = out.with_name(out.name + ".progress.sqlite")
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        if progress.exists():
            try:
                with sqlite3.connect(progress) as db:
                    done = db.execute("SELECT COUNT(*) FROM done").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 5:
                break
        time.sleep(0.05)
    process.kill()  # SIGKILL
    process.wait()
    assert process.returncode == -9 and done >= 5, process.stderr.read().decode()
    assert not out.exists() and not out.with_suffix(".manifest.json").exists()
    before = server.requests

    settings = annotate_settings(server.base_url, concurrency=1, cache=False)
    manifest = run_annotate(settings, corpus, out, show_progress=False)
    assert manifest["resumed_units"] >= 5 and manifest["counts"]["annotated"] == 30
    assert server.requests - before == 30 - manifest["resumed_units"]
    assert len(out.read_text().splitlines()) == 30


# ------------------------------------------------------------------------------- synthesize

def test_synthesize_seeded_diverse_deduplicated(tmp_path, phi_home, endpoint):
    def reply(prompt):
        if "exercise" in prompt:
            name = prompt.split("`")[1]
            return f"Here it is:\n```python\ndef {name}(xs):\n    \"\"\"Do it.\"\"\"\n    return sorted(xs)\n```\n"
        return "Every section gets the same canned text about loops and lists, repeated. " * 5

    server = endpoint(reply=reply, completion_tokens=50)
    settings = validate(SYNTH_FIELDS, {"kind": "exercises", "count": 12, "seed": 3, "model": "writer",
                                       "base_url": server.base_url, "concurrency": 4, "near_threshold": 0.95}, "--")
    corpus = write_corpus(tmp_path / "c.jsonl", ["print('kept input')\n"])
    manifest = run_synthesize(settings, corpus, tmp_path / "s.jsonl", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert records[0]["text"] == "print('kept input')\n"
    synthetic = records[1:]
    assert all(r["text"].startswith("def ") and "```" not in r["text"] for r in synthetic)
    names = {r["synthetic"]["function_name"] for r in synthetic}
    assert len(names) == len(synthetic) == manifest["counts"]["synthetic_kept"]
    assert manifest["counts"]["requested"] == 12 and manifest["usage"]["completion_tokens"] == 12 * 50
    assert 0 < manifest["diversity"]["distinct_2"] <= 1 and manifest["diversity"]["distinct_constraints"] >= 2
    assert [constraints(settings, i) for i in range(12)] == [constraints(settings, i) for i in range(12)]
    seeds = sorted(body["seed"] for body in server.bodies)
    assert len(set(seeds)) == 12  # each request its own seed
    first = synthetic[0]["synthetic"]  # its provenance, from the stage's seed to the reply
    assert first["seed"] == 3 and first["kind"] == "exercises" and first["topic"] in TOPICS
    chosen = constraints(settings, first["request"])
    assert {k: first[k] for k in chosen} == chosen
    assert first["sampling"] == {"temperature": 0.8, "max_tokens": 1024, "seed": 3 * 1_000_003 + first["request"]}
    assert first["sampling"]["seed"] in seeds and first["generator"]["base_url"] == server.base_url
    assert first["prompt_template_sha256"] == hashlib.sha256(EXERCISE.encode()).hexdigest()
    assert first["verdicts"] == {"synthesize_dedup": "kept"}
    coverage = manifest["diversity"]["coverage"]
    assert coverage["grid"] == "topic" and coverage["cells"] == len(TOPICS)
    assert coverage["covered"] == len({r["synthetic"]["topic"] for r in synthetic}) >= 2

    textbook = validate(SYNTH_FIELDS, {"count": 6, "model": "writer", "base_url": server.base_url}, "--")
    manifest = run_synthesize(textbook, None, tmp_path / "t.jsonl", show_progress=False)
    assert manifest["counts"]["synthetic_kept"] == 1 and manifest["counts"]["duplicates"] == 5
    assert manifest["dedup"]["counts"]["exact_duplicates"] == 5
    assert manifest["counts"]["near_duplicate_rate"] == round(5 / 6, 4)
    assert manifest["diversity"]["commonest_opening"] == "every section gets the same"
    assert manifest["diversity"]["commonest_opening_share"] == 1.0
    assert manifest["diversity"]["top_openings"] == [["every section gets the same", 1]]
    assert manifest["diversity"]["coverage"] == {"grid": "topic x audience", "cells": len(TOPICS) * len(AUDIENCES),
                                                 "covered": 1, "coverage": round(1 / 400, 4), "topics_covered": 1,
                                                 "audiences_covered": 1}


# ------------------------------------------------------------------------------- phi-eval serve

def test_annotate_and_synthesize_through_phi_eval_serve(tmp_path, phi_home, tiny_phi_dir):
    from phi_eval.serve import start_server

    corpus = stdlib_corpus(tmp_path / "corpus.jsonl", 6)
    with start_server(f"hf:{tiny_phi_dir}") as server:
        common = {"model": server.model_name, "base_url": server.base_url, "concurrency": 4}
        for api in ("chat", "completions"):
            settings = validate(ANNOTATE_FIELDS, {**common, "api": api, "max_chars": 400, "max_tokens": 4}, "--")
            manifest = run_annotate(settings, corpus, tmp_path / f"{api}.jsonl", show_progress=False)
            assert manifest["counts"]["annotated"] == 6 and manifest["counts"]["errors"] == 0
            assert manifest["usage"]["requests"] == 6 and manifest["usage"]["prompt_tokens"] > 6 * 50
            assert 0 < manifest["usage"]["completion_tokens"] <= 6 * 4
            records = [json.loads(line) for line in (tmp_path / f"{api}.jsonl").read_text().splitlines()]
            assert all(r["edu_score"] is None or 0 <= r["edu_score"] <= 10 for r in records)
            assert manifest["counts"]["unparsable"] == sum(1 for r in records if r["edu_score"] is None)

        settings = validate(SYNTH_FIELDS, {**common, "kind": "textbook", "count": 3, "max_tokens": 24, "seed": 1,
                                           "embed_model": f"hf:{tiny_phi_dir}"}, "--")
        manifest = run_synthesize(settings, None, tmp_path / "book.jsonl", show_progress=False)
        assert manifest["usage"]["requests"] == 3 and manifest["counts"]["requested"] == 3
        diversity = manifest["diversity"]
        assert diversity["documents"] == manifest["counts"]["synthetic_kept"] >= 1
        if diversity["documents"] >= 2:
            assert 0 <= diversity["embedding_spread"] <= 2
        again = run_synthesize(settings, None, tmp_path / "book2.jsonl", show_progress=False)
        assert again["usage"]["cached"] == 3 and again["usage"]["requests"] == 0
        assert (tmp_path / "book2.jsonl").read_text() == (tmp_path / "book.jsonl").read_text()
