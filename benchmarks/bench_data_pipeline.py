"""The annotate-free data stages on datatrove vs today's single-process stages, on the same documents.

    .venv/bin/python benchmarks/bench_data_pipeline.py [--sample 300] [--tasks 4]

1. Prepares (untimed) the Python standard library's sources, graded by the heuristic annotator on
   a seeded sample, with `phi-eval data run` (stages source + annotate); the merged result is the
   single-process stages' input, the same documents.
2. Times, on that input, the stages classify (embeddings of a tiny random Phi, a 20-tree forest),
   dedup, decontaminate (HumanEval, MBPP, GSM8K) and filter (top 20% by quality_score):
   - single: the stage functions of phi_eval.data (one process, as `phi-eval data STAGE`);
   - datatrove, 1 worker: `data run --tasks 1 --workers 1`;
   - datatrove, 2 workers: `data run --tasks 4 --workers 2`.
   A stage's time on datatrove is the sum of its phases' wall seconds (pipeline.json's
   phase_seconds), global steps included.
3. Prints documents/s per stage and the ratios: the 2-worker speed-up (target >= 1.8x on 2 idle
   cores) and the 1-worker overhead vs single (target < 10%); checks that the two datatrove runs
   wrote the same corpus, and whether the single-process run kept the same documents (its filter
   breaks ties by corpus order, its dedup keeps the first in corpus order; datatrove uses the key
   order). Writes benchmarks/out/bench_data_pipeline.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "out"
BENCHMARKS = next((p for p in (ROOT.parent / "shared" / "benchmarks", Path("/work/shared/benchmarks")) if p.is_dir()),
                  None)
STAGES = ("classify", "dedup", "decontaminate", "filter")


def stage_settings(embed_dir: Path) -> list[dict]:
    decontaminate = {"stage": "decontaminate", "tasks": ["humaneval", "mbpp", "gsm8k"] if BENCHMARKS else ["humaneval"]}
    if BENCHMARKS:
        decontaminate["data_dir"] = str(BENCHMARKS)
    # filter last: dedup and decontaminate then see the whole corpus, not its top fifth
    return [{"stage": "classify", "embed_model": f"hf:{embed_dir}", "label_threshold": 7, "n_estimators": 20,
             "max_tokens": 128, "device": "cpu"},
            {"stage": "dedup"},
            decontaminate,
            {"stage": "filter", "keep_fraction": 0.2}]


def prefix(sample: int) -> list[dict]:
    return [{"stage": "source", "inputs": [sysconfig.get_paths()["stdlib"]], "max_file_bytes": 60_000,
             "exclude_dirs": ["__pycache__", "site-packages"]},
            {"stage": "annotate", "annotator": "heuristic", "sample_size": sample}]


def run_single(stages: list[dict], input_path: Path, work: Path) -> dict:
    """Today's stages, one process, chained as run_stages does; seconds and output per stage."""
    from phi_eval.data.pipeline import check_stage, run_one

    results, previous = {}, input_path
    for i, stage in enumerate(stages):
        name = stage["stage"]
        settings = check_stage(name, {k: v for k, v in stage.items() if k != "stage"}, "bench")
        output = work / f"{i}-{name}.jsonl"
        start = time.monotonic()
        run_one(name, settings, previous, output, False)
        results[name] = {"seconds": time.monotonic() - start, "input": count(previous)}
        previous = output
    return {"stages": results, "ids": sorted(json.loads(line)["id"] for line in previous.open())}


def run_datatrove(stages: list[dict], prepared: Path, out: Path, tasks: int, workers: int) -> dict:
    """`phi-eval data run` (its own process, as a user runs it) into a copy of the prepared folder,
    where source and annotate are done and so skipped."""
    import subprocess

    import yaml

    from phi_eval.data.decontaminate import FIELDS, load_benchmarks
    from phi_eval.data.stage import validate

    shutil.copytree(prepared, out)
    recipe = yaml.safe_load((ROOT / "recipes" / "phi-tiny.yaml").read_text())
    recipe["data"] = {"stages": stages, "val_fraction": 0.05}
    (out.parent / f"{out.name}.yaml").write_text(yaml.safe_dump(recipe))
    subprocess.run([sys.executable, "-m", "phi_eval.cli", "data", "run", str(out.parent / f"{out.name}.yaml"),
                    "--out", str(out), "--tasks", str(tasks), "--workers", str(workers), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    summary = json.loads((out / "pipeline.json").read_text())
    results = {}
    for i, stage in enumerate(summary["stages"][2:], 2):
        seconds = sum(v for k, v in summary["phase_seconds"].items() if k.startswith(f"{i:02d}-"))
        results[stage["stage"]] = {"seconds": seconds, "input": summary["stages"][i - 1]["documents"]}
    start = time.monotonic()
    decontaminate = next(s for s in stages if s["stage"] == "decontaminate")
    load_benchmarks(validate(FIELDS, {k: v for k, v in decontaminate.items() if k != "stage"}, "bench"))
    results["decontaminate"]["seconds"] += time.monotonic() - start  # the plan loads them outside the phases
    corpus = out / "corpus.jsonl"
    return {"stages": results, "corpus": corpus.read_bytes(), "ids": sorted(json.loads(l)["id"] for l in corpus.open())}


def count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300, help="documents graded by the heuristic")
    parser.add_argument("--tasks", type=int, default=4, help="tasks of the 2-worker run")
    args = parser.parse_args()

    from tiny import make_tiny_phi

    from phi_eval.data.distributed.reduce import write_sorted
    from phi_eval.data.distributed.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        embed_dir = make_tiny_phi(tmp / "tiny-phi")
        stages = stage_settings(embed_dir)
        prepared = {}
        for tasks in (1, args.tasks):  # shards of the prepared corpus for each split (untimed)
            prepared[tasks] = tmp / f"prepared-{tasks}"
            run_pipeline(prefix(args.sample), prepared[tasks], tasks=tasks, workers=2, progress=False)
            for leftover in ("corpus.jsonl", "pipeline.json"):
                (prepared[tasks] / leftover).unlink()
        single_input = tmp / "annotated.jsonl"
        documents, _ = write_sorted(prepared[1] / "01-annotate", single_input)
        text_bytes = sum(len(json.loads(line)["text"].encode()) for line in single_input.open())
        print(f"corpus: {documents:,} documents of the standard library, {args.sample} graded", file=sys.stderr)

        single = run_single(stages, single_input, tmp / "single")
        one = run_datatrove(prefix(args.sample) + stages, prepared[1], tmp / "one", 1, 1)
        two = run_datatrove(prefix(args.sample) + stages, prepared[args.tasks], tmp / "two", args.tasks, 2)

    rows = []
    for name in STAGES:
        docs = single["stages"][name]["input"]
        s, o, t = (r["stages"][name]["seconds"] for r in (single, one, two))
        rows.append({"stage": name, "documents": docs, "single_docs_per_s": docs / s, "one_worker_docs_per_s": docs / o,
                     "two_workers_docs_per_s": docs / t, "speedup_two_workers": o / t, "overhead_one_worker": o / s - 1})
    total = {k: sum(r["stages"][n]["seconds"] for n in STAGES) for k, r in
             (("single", single), ("one", one), ("two", two))}
    result = {"documents": documents, "mean_document_bytes": round(text_bytes / documents), "sample": args.sample, "tasks_two_workers": args.tasks, "stages": rows,
              "total_seconds": total, "speedup_two_workers": total["one"] / total["two"],
              "overhead_one_worker": total["one"] / total["single"] - 1,
              "same_corpus_one_vs_two_workers": one["corpus"] == two["corpus"],
              "same_documents_single_vs_datatrove": single["ids"] == one["ids"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_data_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")

    print("| stage | docs | single docs/s | datatrove 1 worker docs/s | 2 workers docs/s | 2-worker speed-up | "
          "1-worker overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['documents']:,} | {r['single_docs_per_s']:.1f} | {r['one_worker_docs_per_s']:.1f} | "
              f"{r['two_workers_docs_per_s']:.1f} | {r['speedup_two_workers']:.2f}x | {r['overhead_one_worker']:+.1%} |")
    print(f"| all four | | | | | {result['speedup_two_workers']:.2f}x | {result['overhead_one_worker']:+.1%} |")
    print(f"same corpus 1 vs 2 workers: {result['same_corpus_one_vs_two_workers']}; same documents as the "
          f"single-process stages: {result['same_documents_single_vs_datatrove']}")


if __name__ == "__main__":
    main()
