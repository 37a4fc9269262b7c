"""`phi-eval data run` on the micro-reproduction's textbook recipe gives the corpus that `phi-eval train`'s
single-process chain (phi_eval.data.pipeline.run_stages) gives: the same documents, in the same order,
with the same fields, hence the same training split and tokens. The recipe's data stages as they are
(the teacher's grades replayed from recipes/teacher/, classify's forest, the top 20%, the teacher's
textbooks and exercises appended, dedup) on a slice of the standard library, with a tiny embedding
model in place of phi-tiny-web."""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import yaml

from phi_eval.cli import main

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def textbook_stages(embed_dir: Path) -> list[dict]:
    """recipes/phi-tiny-textbook.yaml's data.stages on the graded files plus two ungraded folders."""
    from phi_eval.train.recipe import load_recipe

    stages = load_recipe(str(ROOT / "recipes" / "phi-tiny-textbook.yaml")).data.stages
    grades = ROOT / "recipes" / "teacher" / "grades.jsonl"
    graded = sorted({json.loads(line)["id"] for line in grades.read_text().splitlines()})
    if not all(Path(p).is_file() for p in graded):
        pytest.skip("the teacher's grades were taken on another Python's standard library")
    names = [s["stage"] for s in stages]
    assert names == ["source", "annotate", "classify", "filter", "append", "dedup"]
    stages[0]["inputs"] = [*graded, str(STDLIB / "json"), str(STDLIB / "http")]
    stages[1]["grades_file"] = str(grades)
    stages[2].update(embed_model=f"hf:{embed_dir}", n_estimators=20)  # phi-tiny-web needs training first
    stages[4]["files"] = [str(ROOT / f) for f in stages[4]["files"]]
    return stages


def test_data_run_gives_the_single_process_corpus_of_the_textbook_recipe(tmp_path, tiny_phi_dir):
    from phi_eval.data.pipeline import run_stages
    from phi_eval.train.corpus import collect_corpus
    from phi_eval.train.recipe import load_recipe

    stages = textbook_stages(tiny_phi_dir)
    single = run_stages(stages, tmp_path / "single", progress=False)

    recipe = yaml.safe_load((ROOT / "recipes" / "phi-tiny-textbook.yaml").read_text())
    recipe["data"]["stages"] = stages
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    for tasks, workers in ((1, 1), (3, 2)):
        out = tmp_path / f"run-{tasks}"
        assert main(["data", "run", str(tmp_path / "r.yaml"), "--out", str(out), "--quiet", "--tasks", str(tasks),
                     "--workers", str(workers)]) == 0
        assert (out / "corpus.jsonl").read_bytes() == single.read_bytes(), f"--tasks {tasks}"

    documents = [json.loads(line) for line in single.read_text().splitlines()]
    appended = [d for d in documents if d["id"].startswith("synthetic-")]
    written = sum(len(Path(f).read_text().splitlines()) for f in stages[4]["files"])  # the teacher's sections, exercises
    assert 0 < len(appended) <= written and documents[-len(appended):] == appended  # last, less duplicates
    kept = [d for d in documents if "quality_score" in d]
    sourced = len((tmp_path / "single" / "00-source.jsonl").read_text().splitlines())
    assert 0.15 * sourced < len(kept) < 0.25 * sourced and sum("edu_score" in d for d in kept) > 0  # the top 20%
    summary = json.loads((tmp_path / "run-3" / "pipeline.json").read_text())
    report = summary["stages"][2]["reports"]["report"]
    manifest = json.loads(single.with_name("02-classify.manifest.json").read_text())
    assert report["agreement"] == manifest["agreement"] and report["counts"].items() <= manifest["counts"].items()
    # What `phi-eval train --compare` reports of an arm's data (it trains through `data run`'s engine).
    from phi_eval.train.compare import annotation_report

    annotated = json.loads(single.with_name("01-annotate.manifest.json").read_text())
    filtered = json.loads(single.with_name("03-filter.manifest.json").read_text())
    grades = annotation_report(summary["stages"][1])
    assert grades["counts"]["annotated"] > 0
    for key in ("annotator", "counts", "scores"):
        assert grades[key] == annotated[key], key
    for key in ("counts", "threshold", "kept_fraction_of_bytes"):
        assert summary["stages"][3]["reports"]["cut"][key] == filtered[key], key

    provenance = [json.loads(line) for line in (tmp_path / "run-3" / "provenance.jsonl").read_text().splitlines()]
    entered = [json.loads(line) for p in sorted((tmp_path / "run-3" / "04-append").glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    entered = [d for d in entered if "synthetic" in d]
    assert len(entered) == written  # every appended document has an entry, survivor or not
    assert sorted(p["id"] for p in provenance) == sorted(d["id"] for d in entered)
    dedup = {"exact": True, "near": True, "jaccard_threshold": 0.8}
    for entry in provenance:
        assert entry["synthetic"]["model"] == "smollm2-135m-instruct" and entry["synthetic"]["topic"]
        if entry["shard"] is None:  # seed to the stage that dropped it
            assert entry["dropped_by"] == "05-dedup" and entry["verdicts"] == {"05-dedup": {"verdict": "dropped", **dedup}}
            continue
        shard, line = entry["shard"].rsplit(":", 1)
        assert json.loads(Path(shard).read_text().splitlines()[int(line) - 1])["id"] == entry["id"]
        assert entry["dropped_by"] is None and entry["verdicts"] == {"05-dedup": {"verdict": "kept", **dedup}}
    assert sum(e["shard"] is not None for e in provenance) == len(appended)
    assert summary["provenance"]["dropped"] == written - len(appended)

    data = load_recipe(str(ROOT / "recipes" / "phi-tiny-textbook.yaml")).data
    ours, theirs = (collect_corpus(data, sources=[p]) for p in (tmp_path / "run-3" / "corpus.jsonl", single))
    assert (ours.train, ours.val) == (theirs.train, theirs.val)  # what `phi-eval train` tokenizes
