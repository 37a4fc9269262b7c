"""Model-based contamination checks with tiny offline models: embedding neighbours, Min-K% and
Min-K%++ (on a tiny model trained on some items), and the LLM judge against a local
OpenAI-compatible server this test starts."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_contamination import PLANTED, REFORMATTED, RENAMED, VERBATIM, by_id, humaneval_items, write_corpus

from phi_eval.cli import main
from phi_eval.contamination.check import CheckOptions, check
from phi_eval.contamination.membership import membership, min_k, min_k_plus_plus, percentile


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "planted", True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "clean", False)


def subset(doc_ids):
    return [item for item in humaneval_items() if item.doc_id in doc_ids]


# ---------------------------------------------------------------------------------- embedding

def test_embedding_neighbours_find_planted_copies_and_nothing_in_a_clean_corpus(planted, clean, tiny_phi_dir):
    # A random-weight model is no paraphrase detector (CodeGen-350M-mono, phi-1's embedding model, is
    # what catches those), but it still ranks the planted copies first and puts an exact copy at 0.
    items = subset(PLANTED + ("HumanEval/30", "HumanEval/40"))
    options = dict(methods=("embedding",), embed_model=f"hf:{tiny_phi_dir}", embed_threshold=0.2, device="cpu",
                   progress=False)
    found = by_id(check(items, CheckOptions(corpus=[str(planted)], **options)))
    for doc_id in VERBATIM + REFORMATTED:
        nearest = found[doc_id]["embedding"]["nearest"][0]
        assert nearest["document"].endswith(f"exercises.jsonl:{PLANTED.index(doc_id) + 1}"), doc_id
    assert found["HumanEval/0"]["embedding"]["distance"] == pytest.approx(0.0, abs=1e-3)
    assert [doc_id for doc_id, r in found.items() if r["flagged"]] == ["HumanEval/0"]
    assert len(found["HumanEval/0"]["embedding"]["nearest"]) == 5

    report = check(items, CheckOptions(corpus=[str(clean)], **options))
    assert report["tasks"]["humaneval"]["summary"]["flagged"] == 0
    assert min(r["embedding"]["distance"] for r in report["tasks"]["humaneval"]["items"]) > 0.4
    assert report["methods"]["embedding"]["threshold"] == 0.2


def test_embedding_without_threshold_reports_neighbours_and_flags_nothing(planted, tiny_phi_dir):
    report = check(subset(VERBATIM), CheckOptions(methods=("embedding",), corpus=[str(planted)], device="cpu",
                                                  embed_model=f"hf:{tiny_phi_dir}", top_k=2, progress=False))
    for record in report["tasks"]["humaneval"]["items"]:
        assert not record["flagged"] and len(record["embedding"]["nearest"]) == 2
    assert "nothing flagged" in report["methods"]["embedding"]["rule"]


# ----------------------------------------------------------------------------------- Min-K%

def test_min_k_scores():
    import numpy as np

    logp = np.array([-0.1, -5.0, -0.2, -3.0, -0.1, -0.3, -0.2, -0.1, -0.4, -0.2])
    assert min_k(logp, 0.2) == pytest.approx(-4.0)  # the 2 lowest of 10
    assert min_k_plus_plus(logp, np.full(10, -1.0), np.full(10, 2.0), 0.1) == pytest.approx(-2.0)
    assert percentile(1.0, np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(0.375)


@pytest.fixture(scope="module")
def trained_dir(tiny_phi_dir, tmp_path_factory):
    """The tiny model after a few dozen steps on three HumanEval items: those are its "members"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_phi_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_phi_dir)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = [torch.tensor([tokenizer(item.text)["input_ids"][:128]]) for item in humaneval_items()[:3]]
    model.train()
    for _ in range(25):
        for ids in batch:
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    out = tmp_path_factory.mktemp("trained")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_min_k_separates_trained_items_from_a_reference_set(trained_dir):
    items = humaneval_items()
    texts = [item.text for item in items[:6]]  # 0-2 were trained on, 3-5 were not
    reference = [item.text for item in items[20:40]]
    scores, summary = membership(f"hf:{trained_dir}", texts, reference, device="cpu", max_tokens=128,
                                 progress=False)
    for key in ("min_k", "min_k_pp"):
        members = [s[f"{key}_percentile"] for s in scores[:3]]
        others = [s[f"{key}_percentile"] for s in scores[3:]]
        assert min(members) == 1.0 and max(others) < 1.0, key
        assert min(s[key] for s in scores[:3]) > max(s[key] for s in scores[3:])
    assert summary["reference_texts"] == 20 and summary["k"] == 0.2


def test_min_k_through_the_cli_never_flags(trained_dir, tmp_path, capsys, phi_home):
    reference = tmp_path / "reference.jsonl"
    with open(reference, "w") as f:
        for item in humaneval_items()[20:30]:
            f.write(json.dumps({"text": item.text}) + "\n")
    code = main(["contamination", "--tasks", "humaneval", "--limit", "6", "--methods", "mink", "--mink-model",
                 f"hf:{trained_dir}", "--reference", str(reference), "--device", "cpu", "--max-tokens", "128",
                 "-o", str(tmp_path / "report.json"), "--md", str(tmp_path / "report.md")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    summary = report["tasks"]["humaneval"]["summary"]
    assert summary["flagged"] == 0 and summary["min_k_auc"] > 0.5
    assert report["methods"]["mink"]["reference"] == [str(reference)]
    assert "Min-K% AUC against the reference set" in (tmp_path / "report.md").read_text()


# ------------------------------------------------------------------------------------ judge

class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers "Yes." when the snippet is a planted copy:
    the item's text itself, or code with the renamed identifiers of tests' rename() (q0z, ...)."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append((self.path, body))
        user = body["messages"][-1]["content"]
        item, snippet = user.split("\n\nTraining snippet:\n")
        item = item.removeprefix("Benchmark item:\n")
        same = "q0z" in snippet or snippet.strip() in item
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Yes." if same else "no"}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeJudge.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_reviews_the_best_ast_matches(planted, judge_url, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    items = subset(VERBATIM + RENAMED + ("HumanEval/30",))
    report = check(items, CheckOptions(methods=("ast",), corpus=[str(planted)], judge=f"judge-model@{judge_url}",
                                       progress=False))
    found = by_id(report)
    for doc_id in VERBATIM + RENAMED:
        verdict = found[doc_id]["judge"]
        assert verdict["flagged"] and verdict["candidates"][0]["method"] == "ast"
        assert verdict["candidates"][0]["answer"] == "Yes." and "judge" in found[doc_id]["flagged_by"]
    assert not found["HumanEval/30"]["judge"]["flagged"]
    assert found["HumanEval/30"]["judge"]["candidates"][0]["same"] is False
    path, body = FakeJudge.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0
    assert len(FakeJudge.requests) == len(items)
    assert report["methods"]["judge"]["model"] == f"judge-model@{judge_url}"
