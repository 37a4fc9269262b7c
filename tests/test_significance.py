"""Paired tests of two models on the same items: McNemar by hand, bootstrap properties, and the leaderboard."""
import json
import shutil

import numpy as np
import pytest
from app_support import write_run

from phi_eval.cli import main
from phi_eval.report.leaderboard import build_leaderboard
from phi_eval.report.significance import compare, mcnemar_exact, paired_bootstrap, per_item_values


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PHI_EVAL_ZOO", raising=False)


def outcomes(both: int, a_only: int, b_only: int, neither: int):
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=float)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=float)
    return a, b


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 8 against 2 discordant pairs: p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    result = mcnemar_exact(*outcomes(both=30, a_only=8, b_only=2, neither=60))
    assert (result.a_only, result.b_only) == (8, 2)
    assert result.p_value == pytest.approx(112 / 1024)
    # 0 against 6: p = 2 / 2**6; concordant items change nothing.
    assert mcnemar_exact(*outcomes(both=0, a_only=0, b_only=6, neither=0)).p_value == pytest.approx(2 / 64)
    assert mcnemar_exact(*outcomes(both=5, a_only=0, b_only=6, neither=9)).p_value == pytest.approx(2 / 64)
    # No disagreement at all: nothing tells the models apart.
    assert mcnemar_exact(*outcomes(both=4, a_only=0, b_only=0, neither=3)).p_value == 1.0


def test_bootstrap_of_identical_models_covers_zero():
    a = np.random.default_rng(0).random(200)
    result = paired_bootstrap(a, a.copy())
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.p_value == 1.0


def test_bootstrap_of_clearly_different_models_excludes_zero():
    a, b = outcomes(both=20, a_only=40, b_only=5, neither=35)
    result = paired_bootstrap(a, b)
    assert result.difference == pytest.approx(0.35)
    assert 0 < result.low < 0.35 < result.high
    assert result.p_value < 0.001


def test_bootstrap_is_deterministic_with_its_seed_and_has_the_usual_spread():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.1, 1.0, 400), rng.normal(0.0, 1.0, 400)
    first, again, other = paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=4)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    # The percentile interval of a mean is close to mean ± 1.96 standard errors.
    differences = a - b
    half_width = 1.96 * differences.std() / np.sqrt(len(differences))
    assert first.low == pytest.approx(differences.mean() - half_width, abs=0.1 * half_width)
    assert first.high == pytest.approx(differences.mean() + half_width, abs=0.1 * half_width)


def test_item_values_are_means_over_samples_and_compare_pairs_shared_items():
    records = [{"doc_id": "t/0", "scores": {"pass@1": 1.0}}, {"doc_id": "t/0", "scores": {"pass@1": 0.0}},
               {"doc_id": "t/1", "scores": {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 0.0}},
               {"doc_id": "t/2", "passed": True}]  # a record written before "scores": pass@1 from its verdict
    assert per_item_values(records, "pass@1") == {"t/0": 0.5, "t/2": 1.0}
    assert per_item_values(records, "exact_match", "flexible-extract") == {"t/1": 0.0}
    result = compare({"t/0": 0.5, "t/1": 1.0, "t/2": 1.0}, {"t/1": 0.0, "t/2": 1.0, "t/3": 0.0, "t/4": 1.0})
    assert (result["n_paired"], result["only_a"], result["only_b"]) == (2, 1, 2)
    assert result["test"] == "mcnemar_exact" and result["discordant"] == {"a_only": 1, "b_only": 0}
    assert compare({"t/0": 0.5, "t/1": 1.0}, {"t/0": 0.0, "t/1": 1.0})["test"] == "paired_bootstrap"
    assert compare({"t/0": 1.0}, {"t/1": 1.0}) is None


def write_model(out, slug, passed: list[bool]):
    directory = out / slug
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"model_name": slug, "results": {
        "humaneval": {"pass@1,none": sum(passed) / len(passed), "pass@1_stderr,none": 0.05}}}))
    with open(directory / "samples_humaneval.jsonl", "w") as f:
        for i, ok in enumerate(passed):
            f.write(json.dumps({"doc_id": f"HumanEval/{i}", "passed": ok, "scores": {"pass@1": float(ok)}}) + "\n")


def run_leaderboard(capsys, *run_dirs, tmp_path):
    code = main(["leaderboard", *map(str, run_dirs), "-o", str(tmp_path / "board.json"),
                 "--md", str(tmp_path / "board.md")])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((tmp_path / "board.json").read_text()), (tmp_path / "board.md").read_text(), out


def test_leaderboard_marks_a_difference_on_three_items_not_significant(tmp_path, capsys):
    out = write_run(tmp_path / "runs")
    board, markdown, printed = run_leaderboard(capsys, out, tmp_path=tmp_path)
    assert "1 paired comparisons" in printed
    [comparison] = board["comparisons"]
    assert (comparison["model_a"], comparison["model_b"]) == ("model-one", "model-two")
    assert comparison["difference"] == pytest.approx(1 / 3) and comparison["n_paired"] == 3
    assert comparison["discordant"] == {"a_only": 1, "b_only": 0} and comparison["p_value"] == 1.0
    assert comparison["significant"] is False and comparison["ci_low"] <= 0 <= comparison["ci_high"]
    assert "| model-one | model-two | +0.333 |" in markdown and "| n.s. |" in markdown
    # The rows are what they were without samples files.
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    for samples in bare.glob("*/samples_*.jsonl"):
        samples.unlink()
    without = build_leaderboard([bare])
    assert without["comparisons"] == []
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]  # noqa: E731
    assert strip(board["rows"]) == strip(without["rows"])


def test_leaderboard_finds_a_clear_difference_and_counts_unpaired_items(tmp_path, capsys):
    out = tmp_path / "runs"
    write_model(out, "strong", [True] * 30 + [False] * 10 + [True])  # one item the weak run lacks
    write_model(out, "weak", [True] * 8 + [False] * 32)
    write_model(out, "weak-too", [True] * 7 + [False] * 33)
    board, markdown, _ = run_leaderboard(capsys, out, tmp_path=tmp_path)
    by_pair = {(c["model_a"], c["model_b"]): c for c in board["comparisons"]}
    assert set(by_pair) == {("strong", "weak"), ("strong", "weak-too"), ("weak", "weak-too")}
    clear = by_pair[("strong", "weak")]
    assert (clear["n_paired"], clear["only_a"], clear["only_b"]) == (40, 1, 0)
    assert clear["difference"] == pytest.approx(22 / 40) and clear["ci_low"] > 0
    assert clear["significant"] is True and clear["p_value"] < 1e-5
    close = by_pair[("weak", "weak-too")]
    assert close["significant"] is False and close["p_value"] == 1.0  # one discordant item
    assert "40 (1 unpaired left out)" in markdown
    assert markdown.count("| significant |") == 2 and markdown.count("| n.s. |") == 1


def test_a_malformed_samples_file_is_one_line_and_exit_2(tmp_path, capsys):
    out = write_run(tmp_path / "runs")
    with open(out / "hf__model-two" / "samples_humaneval.jsonl", "a") as f:
        f.write("{not json\n")
    code = main(["leaderboard", str(out), "-o", str(tmp_path / "board.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "samples_humaneval.jsonl:4" in err
