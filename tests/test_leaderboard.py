"""The leaderboard from results.json files this test writes: rows, deltas, 6ND, Markdown, plot, errors."""
import json

import pytest

from phi_eval.errors import UsageError
from phi_eval.report.leaderboard import build_leaderboard, plot, to_markdown, write_json
from phi_eval.zoo import load_zoo


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PHI_EVAL_ZOO", raising=False)


def results_json(model, card, parameters, humaneval, mbpp, contamination=None):
    return {
        "results": {
            "humaneval": {"alias": "humaneval", "pass@1,none": humaneval, "pass@1_stderr,none": 0.0147},
            "mbpp": {"alias": "mbpp", "pass@1,none": mbpp, "pass@1_stderr,none": "N/A"},
        },
        "n-samples": {"humaneval": {"original": 164, "effective": 164}, "mbpp": {"original": 500, "effective": 50}},
        "n-shot": {"humaneval": 0, "mbpp": 3},
        "higher_is_better": {"humaneval": {"pass@1": True}, "mbpp": {"pass@1": True}},
        "model_name": model,
        "model_name_sanitized": model,
        "config": {"model": model, "model_card": card, "parameters": parameters},
        "contamination": contamination,
    }


@pytest.fixture
def out_dir(tmp_path):
    out = tmp_path / "out"
    runs = {
        "phi-1": results_json("phi-1", "phi-1", None, 0.45, 0.5),
        "hf__tiny": results_json("tiny", None, 1_843_200, 0.0366, 0.02,
                                 contamination={"humaneval": {"flagged": 12, "clean": 152}}),
    }
    for slug, results in runs.items():
        (out / slug).mkdir(parents=True)
        (out / slug / "results.json").write_text(json.dumps(results))
    return out


def find(board, model, task, kind="measured"):
    [row] = [r for r in board["rows"] if (r["model"], r["task"], r["kind"]) == (model, task, kind)]
    return row


def test_rows_deltas_compute_and_reported_field(out_dir):
    board = build_leaderboard([out_dir])
    assert board["schema_version"] == 1 and len(board["runs"]) == 2

    row = find(board, "phi-1", "humaneval")
    assert (row["metric"], row["filter"], row["value"], row["stderr"], row["n"], row["n_shot"]) == \
        ("pass@1", "none", 0.45, 0.0147, 164, 0)
    assert row["reported_value"] == 0.506 and row["reported_verified"] is True
    assert "arXiv:2306.11644, Table 1" in row["reported_source"]
    assert row["delta"] == pytest.approx(0.45 - 0.506)
    assert row["parameters"] == 1_300_000_000 and row["training_tokens"] == 54_000_000_000
    assert row["train_compute_flops"] == 6 * 1_300_000_000 * 54_000_000_000

    mbpp = find(board, "phi-1", "mbpp")
    assert mbpp["stderr"] is None and mbpp["n"] == 50 and mbpp["delta"] == pytest.approx(0.5 - 0.555)

    tiny = find(board, "tiny", "humaneval")
    assert tiny["model_card"] is None and tiny["reported_value"] is None and tiny["delta"] is None
    assert tiny["parameters"] == 1_843_200 and tiny["train_compute_flops"] is None
    assert tiny["contamination"] == {"flagged": 12, "clean": 152}

    # Cards with a published number on a measured task appear as "reported" rows ...
    phi15 = find(board, "phi-1.5", "humaneval", kind="reported")
    assert phi15["value"] is None and phi15["reported_value"] == 0.341 and phi15["delta"] is None
    assert phi15["train_compute_flops"] == 6 * 1_300_000_000 * 150_000_000_000
    assert find(board, "starcoder", "mbpp", kind="reported")["reported_value"] == 0.527
    # ... but not for a model that was run, nor for tasks nobody ran.
    assert not [r for r in board["rows"] if r["model"] == "phi-1" and r["kind"] == "reported"]
    assert {r["task"] for r in board["rows"]} == {"humaneval", "mbpp"}
    # Measured rows first within a task.
    kinds = [r["kind"] for r in board["rows"] if r["task"] == "humaneval"]
    assert kinds == sorted(kinds, key=lambda k: k != "measured")


def test_model_dir_and_local_card_tokens(out_dir, tmp_path):
    checkpoint = tmp_path / "home" / "models" / "phi-tiny"
    checkpoint.mkdir(parents=True)
    (checkpoint / "training_summary.json").write_text(json.dumps({"parameters": 1_843_200, "tokens_seen": 1_000_000}))
    (out_dir / "phi-tiny").mkdir()
    (out_dir / "phi-tiny" / "results.json").write_text(json.dumps(results_json("phi-tiny", "phi-tiny", None, 0.01, 0.0)))

    board = build_leaderboard([out_dir / "phi-tiny"], zoo=load_zoo())
    row = find(board, "phi-tiny", "humaneval")
    assert (row["parameters"], row["training_tokens"]) == (1_843_200, 1_000_000)
    assert row["train_compute_flops"] == 6 * 1_843_200 * 1_000_000
    assert row["run_dir"] == str((out_dir / "phi-tiny").resolve())


def test_json_markdown_and_plot(out_dir, tmp_path):
    board = build_leaderboard([out_dir])
    write_json(board, tmp_path / "report" / "leaderboard.json")
    assert json.loads((tmp_path / "report" / "leaderboard.json").read_text())["rows"] == board["rows"]

    markdown = to_markdown(board)
    assert "## humaneval · pass@1\n" in markdown and "## mbpp · pass@1\n" in markdown
    assert "0.450 ± 0.015" in markdown and "0.506" in markdown and "-0.056" in markdown
    assert "0.341" in markdown and "1.3B" in markdown and "54B" in markdown and "4.21e+20" in markdown
    assert "12 flagged of 164" in markdown
    humaneval_table = markdown.split("## humaneval")[1].split("## mbpp")[0]
    assert humaneval_table.index("| phi-1 |") < humaneval_table.index("| phi-1.5 |")  # measured first

    png = tmp_path / "plots" / "leaderboard.png"
    plot(board, png)
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000


def test_limited_runs_say_so(out_dir):
    board = build_leaderboard([out_dir])
    row = find(board, "phi-1", "mbpp")
    assert (row["n"], row["n_total"]) == (50, 500)
    markdown = to_markdown(board)
    assert "| 50 of 500 |" in markdown.split("## mbpp")[1] and "| 164 |" in markdown.split("## humaneval")[1]
    results_file = out_dir / "phi-1" / "results.json"
    results = json.loads(results_file.read_text())
    results["config"]["limit"] = 5
    results["n-samples"]["humaneval"] = {"original": 5, "effective": 5}
    results_file.write_text(json.dumps(results))
    board = build_leaderboard([out_dir])
    assert find(board, "phi-1", "humaneval")["limit"] == 5
    assert "| phi-1 | 0.450 ± 0.015 | 5 (--limit 5) |" in to_markdown(board)


def test_plot_labels_do_not_overlap(tmp_path):
    """Models of one size with close scores: their labels are moved apart, in every panel."""
    from phi_eval.report.plots import figure

    out = tmp_path / "out"
    for i, score in enumerate([0.30, 0.305, 0.31, 0.30, 0.302]):
        run = results_json(f"model-{i}", None, 135_000_000, score, score / 2)
        (out / f"m{i}").mkdir(parents=True)
        (out / f"m{i}" / "results.json").write_text(json.dumps(run))
    fig = figure(build_leaderboard([out]))
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().startswith("model-")]
        assert len(boxes) >= 5 or not boxes
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)


def test_missing_and_malformed_results(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        build_leaderboard([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no results\.json in .*empty"):
        build_leaderboard([tmp_path / "empty"])
    bad = tmp_path / "bad" / "model"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"results": {')
    with pytest.raises(UsageError, match=r"model/results\.json is not valid JSON") as error:
        build_leaderboard([tmp_path / "bad"])
    assert "\n" not in str(error.value)
    (bad / "results.json").write_text("[]")
    with pytest.raises(UsageError, match=r'results\.json has no "results" object'):
        build_leaderboard([bad])


def test_filters_and_plain_lm_eval_results(tmp_path):
    """An lm-eval file without phi-eval's config is matched to its card by hub id; each filter is a row."""
    results = {
        "results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.12, "exact_match_stderr,strict-match": 0.01,
                              "exact_match,flexible-extract": 0.15, "exact_match_stderr,flexible-extract": 0.01,
                              "crashed,none": 3, "safety_p_value,none": 0.2}},  # no stderr: not a score row
        "n-shot": {"gsm8k": 5},
        "model_name": "meta-llama/Llama-2-7b-hf",
        "config": {"model": "hf", "model_args": "pretrained=meta-llama/Llama-2-7b-hf"},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    board = build_leaderboard([tmp_path])
    rows = [r for r in board["rows"] if r["kind"] == "measured"]
    assert {r["filter"]: r["delta"] for r in rows} == {"strict-match": pytest.approx(0.12 - 0.146),
                                                       "flexible-extract": pytest.approx(0.15 - 0.146)}
    assert all(r["model_card"] == "llama-2-7b" and r["parameters"] == 7_000_000_000 for r in rows)
    markdown = to_markdown(board)
    assert "## gsm8k · exact_match (strict-match)" in markdown and "## gsm8k · exact_match (flexible-extract)" in markdown
    assert find(board, "falcon-7b", "gsm8k", kind="reported")["reported_value"] == 0.068
    assert "5 (paper: " not in markdown  # the paper states no shot count for this number


def test_plot_panels_prefer_tasks_with_papers_numbers_one_metric_each():
    from phi_eval.report.plots import MAX_COLUMNS, panel_keys, shown_panels

    def row(task, metric, kind="measured"):
        return {"task": task, "metric": metric, "filter": "none", "kind": kind}

    tasks = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "siqa"]
    rows = [row("gsm8k", "exact_match")] + [row(t, m) for t in tasks for m in ("acc", "acc_norm")]
    rows += [row("humaneval", "pass@1"), row("humaneval", "pass@1", "reported"), row("piqa", "acc", "reported")]
    shown = shown_panels(rows, panel_keys(rows))
    assert len(shown) == MAX_COLUMNS == 6
    assert shown[:2] == [("piqa", "acc", "none"), ("humaneval", "pass@1", "none")]  # leaderboard order
    assert len({task for task, _, _ in shown}) == 6  # one metric per task while tasks remain
    assert shown[2:] == [("gsm8k", "exact_match", "none"), ("arc_challenge", "acc", "none"),
                         ("arc_easy", "acc", "none"), ("boolq", "acc", "none")]


def test_plot_labels_stay_inside_the_figure(tmp_path):
    """Papers' biggest models sit at the right edge of the last panel: their labels go left, not off the image."""
    from phi_eval.report.plots import figure

    out = tmp_path / "out"
    (out / "m").mkdir(parents=True)
    (out / "m" / "results.json").write_text(json.dumps(results_json("model-0", None, 135_000_000, 0.3, 0.2)))
    fig = figure(build_leaderboard([out]))
    renderer = fig.canvas.get_renderer()
    labels = [t for ax in fig.axes for t in ax.texts if t.get_text() and hasattr(t, "xyann")]
    assert len(labels) > 4
    for label in labels:
        box = label.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, label.get_text()
