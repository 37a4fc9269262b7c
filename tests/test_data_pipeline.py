"""The data stages on real inputs (the installed Python sources), their manifests, skip on rerun,
the pipeline contract (validate_stages / run_stages) and its errors, and the CLI."""
from __future__ import annotations

import json
import re
import sysconfig
from pathlib import Path

import pytest

from phi_eval.cli import main
from phi_eval.data.classify import FIELDS as CLASSIFY_FIELDS, run_classify
from phi_eval.data.dedup import FIELDS as DEDUP_FIELDS, run_dedup
from phi_eval.data.filter import FIELDS as FILTER_FIELDS, run_filter
from phi_eval.data.heuristic import heuristic_score
from phi_eval.data.pipeline import run_stages, validate_stages
from phi_eval.data.source import FIELDS as SOURCE_FIELDS, run_source
from phi_eval.data.stage import file_sha256, validate
from phi_eval.errors import UsageError

STDLIB = Path(sysconfig.get_paths()["stdlib"])

DOCUMENTED = '''"""Temperature helpers for a weather station."""


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit.

    >>> celsius_to_fahrenheit(100)
    212.0
    """
    # The scales differ by a factor of 9/5 and an offset of 32 degrees.
    return celsius * 9 / 5 + 32


def average(readings: list[float]) -> float:
    """The mean of a non-empty list of readings."""
    total = sum(readings)  # add them all up first
    return total / len(readings)
'''
MINIFIED = ("import numpy as np;from .x import y\ndef f(a,b,c):\n return [np.q(a[i]*b-c/(i+1)**2,y(i,a,b,c,"
            + ",".join(f"a{i}" for i in range(60)) + ")) for i in range(len(a)) if a[i]>b and c<i or i%3==0]\n")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def manifest_of(path: Path) -> dict:
    return json.loads(path.with_suffix(".manifest.json").read_text())


def source_settings(**extra) -> dict:
    return validate(SOURCE_FIELDS, {"inputs": [str(STDLIB / "json"), str(STDLIB / "email")], **extra}, "--")


# ------------------------------------------------------------------------------- source

def test_source_local_python_files_limits_and_rerun(tmp_path):
    out = tmp_path / "src.jsonl"
    manifest = run_source(source_settings(), out, show_progress=False)
    documents = read(out)
    expected = sorted(str(p) for root in ("json", "email") for p in (STDLIB / root).rglob("*.py")
                      if "__pycache__" not in p.parts and p.read_text().strip())
    assert sorted(d["id"] for d in documents) == expected  # empty __init__.py files are skipped and counted
    assert documents[0]["text"] == Path(documents[0]["id"]).read_text()
    assert manifest["output"]["sha256"] == file_sha256(out) and manifest["output"]["documents"] == len(expected)
    assert manifest["counts"]["documents"] == len(expected) and not manifest["skipped"]
    assert manifest["counts"]["skipped"]["empty"] >= 1
    assert [i["files"] for i in manifest["inputs"]] == [len(list((STDLIB / r).rglob("*.py"))) for r in ("json", "email")]

    assert run_source(source_settings(), out, show_progress=False)["skipped"]
    limited = run_source(source_settings(max_docs=5), tmp_path / "five.jsonl", show_progress=False)
    assert limited["output"]["documents"] == 5 and limited["stopped_by"] == "max_docs"
    small = run_source(source_settings(max_file_bytes=2000), tmp_path / "small.jsonl", show_progress=False)
    assert all(len(d["text"].encode()) <= 2000 for d in read(tmp_path / "small.jsonl"))
    assert small["counts"]["skipped"]["too_large"] > 0
    capped = run_source(source_settings(max_bytes=30_000), tmp_path / "cap.jsonl", show_progress=False)
    assert capped["counts"]["text_bytes"] <= 30_000 and capped["stopped_by"] == "max_bytes"

    out.write_text(out.read_text() + "\n")  # a changed output is not "done"
    assert not run_source(source_settings(), out, show_progress=False)["skipped"]


def test_source_jsonl_keeps_metadata_and_binary_is_skipped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_text(json.dumps({"content": "x = 1\n", "license": "mit", "stars": 3}) + "\n")
    (tmp_path / "in" / "blob.py").write_bytes(b"\0\1\2binary")
    (tmp_path / "in" / "empty.py").write_text("\n\n")
    settings = validate(SOURCE_FIELDS, {"inputs": [str(tmp_path / "in")], "include": ["*.py", "*.jsonl"]}, "--")
    manifest = run_source(settings, tmp_path / "o.jsonl", show_progress=False)
    assert [(d["text"], d["license"], d["stars"]) for d in read(tmp_path / "o.jsonl")] == [("x = 1\n", "mit", 3)]
    assert manifest["counts"]["skipped"]["binary"] == 1 and manifest["counts"]["skipped"]["empty"] == 1


def test_hub_source_offline_is_one_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UsageError, match="hub.*OFFLINE is set.*local directory"):
        run_source(validate(SOURCE_FIELDS, {"inputs": ["hf:bigcode/the-stack-dedup"],
                                            "hub_data_dir": "data/python"}, "--"), tmp_path / "o.jsonl")


# ------------------------------------------------------------------------------- heuristic annotator

def test_heuristic_prefers_documented_code_to_a_minified_blob():
    assert heuristic_score(DOCUMENTED) >= 8
    assert heuristic_score(MINIFIED) <= 3
    assert heuristic_score("") == 0.0
    assert heuristic_score("Just some prose, not code at all.") <= 2
    assert 0 <= heuristic_score((STDLIB / "json" / "decoder.py").read_text()) <= 10


# ------------------------------------------------------------------------------- dedup and filter

def test_dedup_removes_exact_and_reformatted_copies(tmp_path):
    original = (STDLIB / "textwrap.py").read_text()
    reformatted = original.replace("    ", "\t").replace(" = ", "=").replace(", ", ",")
    edited = original.replace("def dedent(text):", "def dedent(text):  # strip common indentation")
    other = (STDLIB / "bisect.py").read_text()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": name, "text": text}) + "\n" for name, text in [
        ("original", original), ("spaces", "\n\n" + original.replace("\n", "\n\n")), ("reformatted", reformatted),
        ("edited", edited), ("other", other)]))
    manifest = run_dedup(validate(DEDUP_FIELDS, {}, "--"), corpus, tmp_path / "d.jsonl", show_progress=False)
    assert [d["id"] for d in read(tmp_path / "d.jsonl")] == ["original", "other"]
    assert manifest["counts"] == {"read": 5, "kept": 2, "exact_duplicates": 1, "near_duplicates": 2}
    assert {e["dropped"]: e["duplicate_of"] for e in manifest["examples"]} == {
        "spaces": "original", "reformatted": "original", "edited": "original"}

    exact_only = run_dedup(validate(DEDUP_FIELDS, {"near": False}, "--"), corpus, tmp_path / "e.jsonl",
                           show_progress=False)
    assert exact_only["counts"]["kept"] == 4


@pytest.mark.parametrize("fraction, kept", [(0.2, 4), (0.5, 10), (1.0, 20), (0.01, 1)])
def test_filter_keeps_top_fraction(tmp_path, fraction, kept):
    corpus = tmp_path / "c.jsonl"
    scores = [(i * 7) % 20 / 20 for i in range(20)]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"doc {i}", "quality_score": s}) + "\n"
                              for i, s in enumerate(scores)) + json.dumps({"id": "none", "text": "unscored"}) + "\n")
    manifest = run_filter(validate(FILTER_FIELDS, {"keep_fraction": fraction}, "--"), corpus, tmp_path / "f.jsonl",
                          show_progress=False)
    out = read(tmp_path / "f.jsonl")
    assert len(out) == kept == manifest["counts"]["kept"] and manifest["counts"]["unscored"] == 1
    assert min(d["quality_score"] for d in out) == manifest["threshold"]
    assert manifest["threshold"] >= max([s for s in scores if s not in {d["quality_score"] for d in out}], default=0)
    assert [d["id"] for d in out] == sorted((d["id"] for d in out), key=lambda i: int(i[1:]))  # corpus order
    assert manifest["examples"]["top"][0]["score"] == max(scores)


# ------------------------------------------------------------------------------- classify

def test_classify_mimics_annotator_with_agreement_report(tmp_path, tiny_phi_dir):
    texts = [p.read_text() for p in sorted((STDLIB / "email").rglob("*.py"))[:20]] + [MINIFIED.replace("f(", f"f{i}(")
                                                                                        for i in range(12)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t, **({"edu_score": heuristic_score(t)}
                                                                      if i % 4 else {})}) + "\n"
                              for i, t in enumerate(texts)))
    settings = validate(CLASSIFY_FIELDS, {"embed_model": f"hf:{tiny_phi_dir}", "label_threshold": 5,
                                          "n_estimators": 20, "max_tokens": 64, "test_fraction": 0.3}, "--")
    manifest = run_classify(settings, corpus, tmp_path / "q.jsonl", show_progress=False)
    documents = read(tmp_path / "q.jsonl")
    assert len(documents) == len(texts) and all(0 <= d["quality_score"] <= 1 for d in documents)
    report = manifest["agreement"]
    assert set(report) == {"held_out", "accuracy", "majority_class_accuracy", "f1", "precision", "recall", "spearman"}
    assert report["held_out"] == manifest["counts"]["held_out"] > 0 and 0 <= report["accuracy"] <= 1
    assert manifest["counts"]["graded"] == sum(1 for i in range(len(texts)) if i % 4)
    assert manifest["embedding"]["dimensions"] == 64

    with pytest.raises(UsageError, match="label_threshold 11"):
        run_classify({**settings, "label_threshold": 11}, corpus, tmp_path / "r.jsonl", show_progress=False)


# ------------------------------------------------------------------------------- pipeline contract

@pytest.mark.parametrize("stages, message", [
    ([], r"data\.stages: expected a non-empty list"),
    ([{"inputs": ["x"]}], r"data\.stages\[0\]: expected a mapping with a 'stage' key"),
    ([{"stage": "scrape"}], r"data\.stages\[0\]\.stage: expected one of source"),
    ([{"stage": "filter"}], r"data\.stages\[0\]\.stage: filter needs an earlier stage"),
    ([{"stage": "source"}], r"data\.stages\[0\]\.inputs: required"),
    ([{"stage": "source", "inputs": ["."]}, {"stage": "annotate", "annotator": "heuristic"},
      {"stage": "filter", "keep_fraction": 1.5}], r"data\.stages\[2\]\.keep_fraction: expected a number in \(0, 1\]"),
    ([{"stage": "source", "inputs": ["."], "max_docs": 0}], r"data\.stages\[0\]\.max_docs: expected an integer >= 1"),
    ([{"stage": "source", "inputs": ["."], "max_doc": 3}], r"data\.stages\[0\]\.max_doc: unknown setting"),
    ([{"stage": "source", "inputs": ["."]}, {"stage": "annotate"}], r"data\.stages\[1\]\.model: required when"),
    ([{"stage": "synthesize", "count": 3}], r"data\.stages\[0\]\.model: required"),
    ([{"stage": "source", "inputs": ["."]}, {"stage": "dedup", "near": "yes"}],
     r"data\.stages\[1\]\.near: expected true or false"),
    ([{"stage": "source", "inputs": ["."]}, {"stage": "source", "inputs": ["."]}],
     r"data\.stages\[1\]\.stage: source can only be the first"),
])
def test_validate_stages_names_the_bad_field(stages, message):
    with pytest.raises(UsageError, match=message):
        validate_stages(stages, "data.stages")


def test_run_stages_end_to_end_offline_and_rerun(tmp_path, phi_home, tiny_phi_dir, capsys):
    """The offline recipe: local sources, heuristic grades, a local embedding model, synthesis via phi-eval serve."""
    from phi_eval.serve import start_server

    with start_server(f"hf:{tiny_phi_dir}") as server:
        stages = [
            {"stage": "source", "inputs": [str(STDLIB / "json"), str(STDLIB / "email")], "max_docs": 30},
            {"stage": "annotate", "annotator": "heuristic"},
            {"stage": "classify", "embed_model": f"hf:{tiny_phi_dir}", "label_threshold": 8, "n_estimators": 10,
             "max_tokens": 64},
            {"stage": "filter", "keep_fraction": 0.5},
            {"stage": "synthesize", "kind": "textbook", "count": 4, "max_tokens": 32, "model": server.model_name,
             "base_url": server.base_url},
            {"stage": "dedup"},
        ]
        validate_stages(stages, "data.stages")
        corpus = run_stages(stages, tmp_path / "work", progress=True)
        assert corpus == tmp_path / "work" / "05-dedup.jsonl"
        documents = read(corpus)
        synthetic = [d for d in documents if d.get("synthetic")]
        assert len(documents) - len(synthetic) <= 15 and len(synthetic) >= 1
        assert all(d["synthetic"]["model"] == server.model_name for d in synthetic)
        summary = json.loads((tmp_path / "work" / "pipeline.json").read_text())
        assert [s["stage"] for s in summary["stages"]] == [s["stage"] for s in stages]
        assert not any(s["skipped"] for s in summary["stages"])
        assert manifest_of(tmp_path / "work" / "03-filter.jsonl")["counts"]["kept"] == 15
        assert manifest_of(tmp_path / "work" / "04-synthesize.jsonl")["usage"]["requests"] == 4

        capsys.readouterr()
        assert run_stages(stages, tmp_path / "work", progress=True) == corpus
        assert "skipped" in capsys.readouterr().err
        summary = json.loads((tmp_path / "work" / "pipeline.json").read_text())
        assert all(s["skipped"] for s in summary["stages"])

        stages[3]["keep_fraction"] = 0.2  # only the filter and what follows it run again
        run_stages(stages, tmp_path / "work", progress=False)
        summary = json.loads((tmp_path / "work" / "pipeline.json").read_text())
        assert [s["skipped"] for s in summary["stages"]] == [True, True, True, False, False, False]
        usage = manifest_of(tmp_path / "work" / "04-synthesize.jsonl")["usage"]
        assert usage["cached"] == 4 and usage["requests"] == 0  # synthesis answers came from the cache


# ------------------------------------------------------------------------------- command line

def test_cli_stages_and_errors(tmp_path, capsys):
    out = tmp_path / "src.jsonl"
    assert main(["data", "source", str(STDLIB / "json"), "--out", str(out), "--quiet"]) == 0
    assert main(["data", "annotate", "--input", str(out), "--out", str(tmp_path / "a.jsonl"),
                 "--annotator", "heuristic", "--quiet"]) == 0
    assert main(["data", "filter", "--input", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "f.jsonl"),
                 "--score-field", "edu_score", "--keep-fraction", "0.4", "--quiet"]) == 0
    assert manifest_of(tmp_path / "f.jsonl")["counts"]["kept"] == 2  # ceil(0.4 x 5 files)
    assert main(["data", "dedup", "--input", str(tmp_path / "f.jsonl"), "--out", str(tmp_path / "d.jsonl"),
                 "--no-near", "--quiet"]) == 0
    assert manifest_of(tmp_path / "d.jsonl")["settings"]["near"] is False
    capsys.readouterr()

    assert main(["data", "filter", "--input", str(out), "--out", str(tmp_path / "x.jsonl"),
                 "--keep-fraction", "0"]) == 2
    assert capsys.readouterr().err.strip() == "phi-eval: error: --keep-fraction: expected a number in (0, 1] (got 0.0)"
    assert main(["data", "annotate", "--input", str(out), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--model: required when annotator is llm" in capsys.readouterr().err
    assert main(["data", "filter", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "filter", "--input", str(out), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no document" in err and "quality_score" in err


def reformat(code: str) -> str:
    """What a formatter does: LF endings, 4-space indents, `a, b` and `a = b` spacing."""
    lines = [line.rstrip().replace("\t", "    ") for line in code.splitlines()]
    text = "\n".join(re.sub(r"\s*,\s*", ", ", re.sub(r"(?<=\w)=(?=\w)", " = ", line)) for line in lines)
    return text + "\n"


def test_source_and_dedup_on_mbpp_with_reformatted_copies(tmp_path):
    from conftest import SHARED_BENCHMARKS

    mbpp = SHARED_BENCHMARKS / "mbpp" / "mbpp.jsonl"
    if not mbpp.exists():
        pytest.skip("shared MBPP release not present")
    settings = validate(SOURCE_FIELDS, {"inputs": [str(mbpp)], "text_field": "code", "max_docs": 200}, "--")
    run_source(settings, tmp_path / "mbpp.jsonl", show_progress=False)
    originals = read(tmp_path / "mbpp.jsonl")
    assert len(originals) == 200 and all("task_id" in d and "test_list" in d for d in originals)
    copies = [{"id": f"copy-of-{d['task_id']}", "text": reformat(d["text"])} for d in originals[:50]]
    changed = sum(" ".join(c["text"].split()) != " ".join(d["text"].split()) for c, d in zip(copies, originals))
    assert changed >= 20  # these differ even after whitespace normalisation: only the near check can catch them
    corpus = tmp_path / "with-copies.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in originals + copies))
    manifest = run_dedup(validate(DEDUP_FIELDS, {}, "--"), corpus, tmp_path / "d.jsonl", show_progress=False)
    kept = {d["id"] for d in read(tmp_path / "d.jsonl")}
    assert not any(i.startswith("copy-of-") for i in kept)
    assert len(kept) >= 190  # MBPP's own near-identical solutions may go too
    assert manifest["counts"]["near_duplicates"] >= changed
    assert manifest["counts"]["near_duplicates"] + manifest["counts"]["exact_duplicates"] == 250 - len(kept)


def test_failed_stage_leaves_no_progress_file(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "x = 1\n"}) + "\n")
    with pytest.raises(UsageError, match="no document"):
        run_filter(validate(FILTER_FIELDS, {}, "--"), corpus, tmp_path / "f.jsonl", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_progress_keeps_work_of_the_same_identity_only(tmp_path):
    from phi_eval.data.stage import Progress

    progress = Progress(tmp_path / "p.sqlite", "identity-a", flush_every=100)
    progress.add(0, [{"text": "a"}])
    progress.add(1, [], {"skipped": "empty"})
    progress.flush()
    progress._db.close()  # as a killed process would leave it
    again = Progress(tmp_path / "p.sqlite", "identity-a")
    assert again.resumed == 2 and list(again.records()) == [{"text": "a"}] and list(again.infos()) == [
        {"skipped": "empty"}]
    again._db.close()
    changed = Progress(tmp_path / "p.sqlite", "identity-b")  # other settings or inputs: start over
    assert changed.resumed == 0 and changed.units() == set()
