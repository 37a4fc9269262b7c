"""The Gradio app, launched, driven over HTTP with gradio_client: a side-by-side request streams two tiny
models at once, the leaderboard and samples views return the expected rows, bad input gets a message."""
import json

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError

from app_support import compare_args, launched, write_leaderboard, write_run
from phi_eval.app.pool import ModelPool
from phi_eval.app.presets import PRESETS
from phi_eval.models import GenerationConfig, GenerationRequest, load_model
from phi_eval.zoo import parse_model_spec

PROMPT = PRESETS["Self-awareness (the talk)"].prompt


@pytest.fixture(scope="module")
def specs(tiny_phi_dir, tmp_path_factory):
    from tiny import make_tiny_phi

    return [f"hf:{tiny_phi_dir}", f"hf:{make_tiny_phi(tmp_path_factory.mktemp('tiny-phi-2'), seed=1)}"]


@pytest.fixture(scope="module")
def app_url(specs):
    from phi_eval.app import page as app

    pool = ModelPool()
    with launched(app.build(specs, pool=pool)) as url:
        yield url, pool


def greedy_text(spec, max_tokens):
    model = load_model(parse_model_spec(spec), device="cpu", dtype="float32", batch_size=1)
    (_, completion), = model.generate([GenerationRequest(PROMPT, GenerationConfig(max_new_tokens=max_tokens))],
                                      progress=False)
    return completion.text


def test_side_by_side_streams_both_models_at_once(app_url, specs):
    url, pool = app_url
    client = Client(url, verbose=False)
    job = client.submit(*compare_args(specs, PROMPT, max_tokens=160), api_name="/compare")
    final = job.result(timeout=120)
    records = [update[-1] for update in job.outputs()]
    record = final[-1]
    a, b = record["sides"]
    assert (a["status"], b["status"]) == ("done", "done")
    assert a["completion"] == greedy_text(specs[0], 160) and b["completion"] == greedy_text(specs[1], 160)
    assert a["completion"] != b["completion"]
    # Streamed: updates came while both sides were part-way through their completions.
    assert any(all(0 < len(s["completion"]) < len(f["completion"]) for s, f in zip(r["sides"], (a, b)))
               for r in records)
    for side in (a, b):
        metrics = side["metrics"]
        assert metrics["output_tokens"] == 160 and metrics["tokens_per_s"] > 0
        assert 0 < metrics["time_to_first_token_s"] < metrics["generation_s"]
        assert side["model"]["backend"] == "hf" and 0 <= side["repetition"]["score"] <= 1
    assert record["prompt"] == PROMPT and record["settings"]["max_new_tokens"] == 160
    # The page's pieces: each side's highlighted completion and metrics, the diff.
    html_a, metrics_a, html_b = final[0], final[1], final[2]
    assert 'class="completion"' in html_a and "output tokens" in metrics_a and html_a != html_b
    assert 'class="removed"' in final[8] and 'class="added"' in final[8]

    exported = client.predict(record, api_name="/export")
    with open(exported) as f:
        assert json.load(f)["sides"][1]["completion"] == b["completion"]
    # A second session reuses the loaded models.
    Client(url, verbose=False).predict(*compare_args(specs, PROMPT, max_tokens=4), api_name="/compare")
    assert pool.loads == 2


def test_a_side_retries_alone_with_its_own_override(app_url, specs):
    url, _ = app_url
    client = Client(url, verbose=False)
    client.predict(*compare_args(specs, PROMPT, max_tokens=8), api_name="/compare")
    shared, view = [0.0, 1.0, 8, 1234, ""], [4, "A", "B"]
    override = [True, 0.0, 1.0, 3, 1, ""]
    final = client.predict(*shared, *view, specs[0], *override, api_name="/retry_b")
    a, b = final[-1]["sides"]
    assert b["override"] is True and b["settings"]["max_new_tokens"] == 3 and b["metrics"]["output_tokens"] == 3
    assert b["completion"] == greedy_text(specs[0], 3) and a["metrics"]["output_tokens"] == 8


def test_bad_input_gets_a_message_not_a_traceback(app_url, specs):
    url, _ = app_url
    client = Client(url, verbose=False)
    # The events' validators answer first, naming the field to fix.
    with pytest.raises(ValidationError, match="text: the prompt is empty"):
        client.predict(*compare_args(specs, "   "), api_name="/compare")
    with pytest.raises(ValidationError, match="max tokens must be a whole number from 1"):
        client.predict(*compare_args(specs, PROMPT, max_tokens=0), api_name="/compare")
    final = client.predict(*compare_args(["no-such-model", "openai:gpt-4o@http://127.0.0.1:9/v1"], PROMPT),
                           api_name="/compare")
    a, b = final[-1]["sides"]
    assert a["status"] == b["status"] == "error"
    assert "unknown model 'no-such-model'" in a["error"] and "unknown model" in final[1]
    assert "cannot reach the openai: endpoint http://127.0.0.1:9/v1" in b["error"] and "Traceback" not in final[3]
    with pytest.raises(ValidationError, match="nothing to export yet"):
        client.predict(None, api_name="/export")


def test_leaderboard_view_returns_filtered_sorted_rows_and_a_plot(app_url, tmp_path, phi_home):
    url, _ = app_url
    client = Client(url, verbose=False)
    board = write_leaderboard(tmp_path / "leaderboard.json")
    client.predict([handle_file(str(board))], api_name="/load_leaderboard")
    table, panel, plot = client.predict("humaneval", "all", "measured", "", "all", "measured", True, None,
                                        api_name="/leaderboard")
    headers, rows = table["headers"], table["data"]
    assert [row[headers.index("model")] for row in rows] == ["phi-1", "tiny"]
    assert rows[1][headers.index("contaminated")] == "yes (12 of 164)"
    assert panel["value"] == "humaneval · pass@1" and plot is not None
    table, _, _ = client.predict("all", "all", "all", "tiny", "contaminated", "model", False, None,
                                 api_name="/leaderboard")
    assert [row[0] for row in table["data"]] == ["tiny"]
    table, _, _ = client.predict("all", "all", "reported", "", "all", "reported", True, None, api_name="/leaderboard")
    reported = [row[headers.index("reported")] for row in table["data"]]
    assert len(reported) > 3 and reported == sorted(reported, reverse=True)

    # A bad file is named and dropped; the rows loaded before stay.
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    *_, files, problems = client.predict([handle_file(str(bad))], api_name="/load_leaderboard")
    assert 'bad.json has no &quot;rows&quot; list' in problems and files is None


def test_samples_view_returns_items_and_each_models_output(app_url, tmp_path):
    url, _ = app_url
    client = Client(url, verbose=False)
    out = str(write_run(tmp_path / "out"))
    assert client.predict(out, api_name="/samples_tasks")["value"] == "humaneval"
    table, item = client.predict(out, "humaneval", "differs", api_name="/samples_items")
    assert table["headers"] == ["item", "model-one", "model-two"]
    assert table["data"] == [["HumanEval/2", "passed", "failed"]] and item["value"] == "HumanEval/2"
    table, _ = client.predict(out, "humaneval", "all", api_name="/samples_items")
    assert [row[0] for row in table["data"]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    html = client.predict(out, "humaneval", "HumanEval/2", api_name="/samples_item")
    assert "return x + 2  # by model-one" in html and "return x + 2  # by model-two" in html
    assert "NameError: name &#x27;y&#x27; is not defined" in html
    with pytest.raises(ValidationError, match="does not exist"):
        client.predict(str(tmp_path / "nowhere"), api_name="/samples_tasks")
