"""A teacher's grades frozen for a study: self-agreement, replay through `annotate --annotator file`,
and the `append` stage that adds kept synthetic data after the filtered corpus."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi_eval.data import teacher
from phi_eval.data.annotate import FIELDS as ANNOTATE_FIELDS, run_annotate, text_sha256
from phi_eval.data.pipeline import run_stages
from phi_eval.data.stage import validate
from phi_eval.errors import UsageError


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def annotated(path: Path, scores: list, annotator: str = "llm:teacher") -> Path:
    return write(path, [{"id": f"d{i}", "text": f"def f{i}():\n    return {i}\n",
                         **({} if s == "skip" else {"edu_score": s, "edu_annotator": annotator})}
                        for i, s in enumerate(scores)])


def test_agreement_perfect_and_chance():
    same = teacher.agreement([1, 5, 9, 2, 8], [1, 5, 9, 2, 8], threshold=7)
    assert same["exact_agreement"] == 1.0 and same["spearman"] == 1.0
    assert same["kappa_bins_low_mid_high"] == 1.0 and same["kappa_high_value_at_7"] == 1.0
    flipped = teacher.agreement([0, 0, 10, 10], [10, 10, 0, 0], threshold=7)
    assert flipped["exact_agreement"] == 0.0 and flipped["spearman"] == -1.0
    assert flipped["kappa_high_value_at_7"] == -1.0 and flipped["kappa_quadratic_0_10"] < 0
    constant = teacher.agreement([7, 7, 7], [7, 7, 7], threshold=7)
    assert constant["spearman"] is None and constant["exact_agreement"] == 1.0  # no variance: no correlation
    assert teacher.agreement([None, 3, None], [2, 3, 4], threshold=7)["both_parsed"] == 1


def test_freeze_writes_grades_and_agreement(tmp_path):
    first = annotated(tmp_path / "a.jsonl", [8, 2, None, 9, "skip"])
    second = annotated(tmp_path / "b.jsonl", [7, 3, 5, "skip", "skip"], annotator="llm:teacher@T=0.7")
    report = teacher.freeze(first, second, tmp_path / "out", threshold=7)
    grades = [json.loads(line) for line in (tmp_path / "out" / "grades.jsonl").read_text().splitlines()]
    assert len(grades) == 4 and grades[0]["edu_score_second"] == 7 and grades[3]["edu_score_second"] is None
    assert grades[0]["sha256"] == text_sha256("def f0():\n    return 0\n")
    assert report["agreement"]["graded_twice"] == 3 and report["agreement"]["both_parsed"] == 2
    assert json.loads((tmp_path / "out" / "agreement.json").read_text()) == report
    assert teacher.main([str(tmp_path / "a.jsonl"), str(write(tmp_path / "none.jsonl", [{"text": "x"}])),
                         "--out", str(tmp_path / "o2")]) == 0
    assert teacher.main([str(tmp_path / "none.jsonl"), str(first), "--out", str(tmp_path / "o3")]) == 2


def test_annotate_replays_grades_by_text_hash(tmp_path):
    teacher.freeze(annotated(tmp_path / "a.jsonl", [8, 2, 6]), annotated(tmp_path / "b.jsonl", [8]), tmp_path / "t",
                   threshold=7)
    corpus = write(tmp_path / "c.jsonl", [{"id": "other-machine-path", "text": "def f2():\n    return 2\n"},
                                          {"id": "x", "text": "ungraded"},
                                          {"id": "y", "text": "def f0():\n    return 0\n"}])
    settings = validate(ANNOTATE_FIELDS, {"annotator": "file", "grades_file": str(tmp_path / "t" / "grades.jsonl")},
                        "--")
    manifest = run_annotate(settings, corpus, tmp_path / "out.jsonl", show_progress=False)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [d.get("edu_score") for d in out] == [6, None, 8]
    assert out[0]["edu_annotator"] == "llm:teacher" and "edu_score" not in out[1]
    assert manifest["counts"]["annotated"] == 2 and manifest["annotator"] == "file: llm:teacher"
    with pytest.raises(UsageError, match="--grades-file: required when annotator is file"):
        run_annotate(validate(ANNOTATE_FIELDS, {"annotator": "file"}, "--"), corpus, tmp_path / "o.jsonl")
    write(tmp_path / "bad.jsonl", [{"edu_score": 3}])
    with pytest.raises(UsageError, match="bad.jsonl:1 .*sha256"):
        run_annotate(validate(ANNOTATE_FIELDS, {"annotator": "file", "grades_file": str(tmp_path / "bad.jsonl")},
                              "--"), corpus, tmp_path / "o.jsonl", show_progress=False)


def test_append_stage_in_a_pipeline(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    synthetic = write(tmp_path / "syn.jsonl", [{"id": "synthetic-textbook-0", "text": "Loops repeat.\n",
                                                "synthetic": {"kind": "textbook"}}])
    stages = [{"stage": "source", "inputs": [str(tmp_path / "src")]}, {"stage": "append", "files": [str(synthetic)]}]
    corpus = run_stages(stages, tmp_path / "work", progress=False)
    out = [json.loads(line) for line in corpus.read_text().splitlines()]
    assert [d["text"] for d in out] == ["x = 1\n", "Loops repeat.\n"] and out[1]["synthetic"]["kind"] == "textbook"
    manifest = json.loads(corpus.with_suffix(".manifest.json").read_text())
    assert manifest["per_file"][str(synthetic)] == {"documents": 1, "bytes": 14}
    with pytest.raises(UsageError, match=r"data\.stages\[1\]\.files: required"):
        run_stages([stages[0], {"stage": "append"}], tmp_path / "w2", progress=False)


def test_completion_template_wraps_the_grading_prompt(tmp_path, phi_home):
    from test_data_llm import FakeEndpoint

    server = FakeEndpoint(reply=lambda prompt: " 8\n")
    try:
        corpus = write(tmp_path / "c.jsonl", [{"id": "a", "text": "def f():\n    return 1\n"}])
        template = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\nEducational value (0-10):"
        settings = validate(ANNOTATE_FIELDS, {"model": "teacher", "base_url": server.base_url, "api": "completions",
                                              "completion_template": template, "stands_in_for": "GPT-4"}, "--")
        manifest = run_annotate(settings, corpus, tmp_path / "out.jsonl", show_progress=False)
        sent = server.bodies[0]["prompt"]
        assert sent.startswith("<|im_start|>user\nBelow is a document") and "return 1" in sent
        assert sent.endswith("assistant\nEducational value (0-10):")
        assert manifest["scores"]["histogram_0_to_10"][8] == 1 and manifest["usage"]["stands_in_for"] == "GPT-4"
        with pytest.raises(UsageError, match="--completion-template: needs api completions"):
            run_annotate({**settings, "api": "chat"}, corpus, tmp_path / "o.jsonl", show_progress=False)
    finally:
        server.close()


def test_expected_grade_from_first_token_logprobs():
    import math

    from phi_eval.data.annotate import expected_grade

    log = math.log
    # "1" then "0" with probability 0.75: P(10) = 0.6 * 0.75, P(1) = 0.6 * 0.25; "5" 0.2; "0" 0.2.
    answer = {"tokens": ["1", "0"], "top": [{"1": log(0.6), "5": log(0.2), "0": log(0.2), "The": log(0.1)},
                                             {"0": log(0.75), "\n": log(0.25)}]}
    assert expected_grade(answer) == pytest.approx((10 * 0.45 + 1 * 0.15 + 5 * 0.2) / 1.0, abs=1e-4)
    assert expected_grade({"tokens": ["7"], "top": [{" 7": log(0.5), " 3": log(0.5)}]}) == 5.0
    assert expected_grade({"tokens": ["x"], "top": [{"x": 0.0}]}) is None and expected_grade(None) is None


def test_annotate_expected_score_asks_for_logprobs(tmp_path, phi_home):
    from test_data_llm import FakeEndpoint

    server = FakeEndpoint(reply=lambda prompt: "7")
    try:
        corpus = write(tmp_path / "c.jsonl", [{"id": "a", "text": "x = 1\n"}])
        settings = validate(ANNOTATE_FIELDS, {"model": "teacher", "base_url": server.base_url, "api": "completions",
                                              "score": "expected"}, "--")
        manifest = run_annotate(settings, corpus, tmp_path / "out.jsonl", show_progress=False)
        assert server.bodies[0]["logprobs"] == 20
        assert manifest["counts"]["unparsable"] == 1  # the fake server returns no logprobs: no grade, not a guess
        with pytest.raises(UsageError, match="--score: expected needs api completions"):
            run_annotate({**settings, "api": "chat"}, corpus, tmp_path / "o.jsonl", show_progress=False)
    finally:
        server.close()
