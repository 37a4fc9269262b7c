"""The annotate-free data stages on datatrove vs today's single-process stages, on the same documents.

    .venv/bin/python benchmarks/bench_data_pipeline.py [--sample 300] [--tasks 4] [--max-tokens 512]
        [--corpus stdlib|large] [--max-docs 8000]

1. Prepares (untimed) the Python standard library's sources (`--corpus stdlib`, ~1,600 files under
   60 kB; `--corpus large`: those, then the environment's site-packages sources, the first
   `--max-docs` .py files under 60 kB in sorted order), graded by the heuristic annotator on
   a seeded sample, with `phi-eval data run` (stages source + annotate); the merged result is the
   single-process stages' input, the same documents.
2. Times, on that input, the stages classify (embeddings of a tiny random Phi over the first
   `--max-tokens` tokens, 128: tokenizing each whole document costs more than the model; a 20-tree
   forest), dedup, decontaminate (HumanEval, MBPP, GSM8K, items loaded inside the stage on both sides)
   and filter (top 20% by quality_score):
   - single: the stage functions of phi_eval.data, chained in one fresh process (as `phi-eval data STAGE`
     runs them), with torch on one thread, the core a datatrove worker gets;
   - datatrove, 1 worker: `data run --tasks 1 --workers 1`;
   - datatrove, 2 workers: `data run --tasks 4 --workers 2`.
   A stage's time on datatrove is the sum of its phases' wall seconds (pipeline.json's phase_seconds),
   global steps included; its CPU time, the phases' CPU seconds of the driver and its workers
   (phase_cpu_seconds). Single: wall and CPU seconds of each stage function.
3. Prints documents/s per stage and the ratios: the 2-worker speed-up (target >= 1.8x on 2 idle
   cores) and the 1-worker overhead vs single (target < 10%), in wall and CPU time; the CPU seconds
   of every datatrove phase; checks that the two datatrove runs wrote the same corpus (bytes) and
   that the single-process stages wrote the same documents in the same order (every field). Writes
   benchmarks/out/bench_data_pipeline.json (bench_data_pipeline-large.json for `--corpus large`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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


def stage_settings(embed_dir: Path, max_tokens: int) -> list[dict]:
    decontaminate = {"stage": "decontaminate", "tasks": ["humaneval", "mbpp", "gsm8k"] if BENCHMARKS else ["humaneval"]}
    if BENCHMARKS:
        decontaminate["data_dir"] = str(BENCHMARKS)
    # filter last: dedup and decontaminate then see the whole corpus, not its top fifth
    return [{"stage": "classify", "embed_model": f"hf:{embed_dir}", "label_threshold": 7, "n_estimators": 20,
             "max_tokens": max_tokens, "device": "cpu"},
            {"stage": "dedup"},
            decontaminate,
            {"stage": "filter", "keep_fraction": 0.2}]


def prefix(sample: int, inputs: list[str]) -> list[dict]:
    return [{"stage": "source", "inputs": inputs, "max_file_bytes": 60_000,
             "exclude_dirs": ["__pycache__", "site-packages"]},
            {"stage": "annotate", "annotator": "heuristic", "sample_size": sample}]


def corpus_inputs(corpus: str, max_docs: int) -> list[str]:
    """The source stage's inputs: the standard library's folder, or (large) a list of files: the
    standard library's, then site-packages', non-empty and under 60 kB, the first `max_docs`."""
    paths = sysconfig.get_paths()
    if corpus == "stdlib":
        return [paths["stdlib"]]
    files = []
    for folder in (paths["stdlib"], paths["purelib"]):
        for path in sorted(Path(folder).rglob("*.py")):
            if "__pycache__" in path.parts or (folder == paths["stdlib"] and "site-packages" in path.parts):
                continue
            if path.is_file() and 0 < path.stat().st_size <= 60_000 and len(files) < max_docs:
                files.append(str(path))
    return files


def cpu_seconds(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_single(stages: list[dict], input_path: Path, work: Path) -> dict:
    """Today's stages in a fresh process (nothing imported before them, as for `data run`)."""
    import subprocess

    work.mkdir(parents=True)
    (work / "stages.json").write_text(json.dumps(stages))
    subprocess.run([sys.executable, __file__, "--single", str(input_path), str(work)], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {**json.loads((work / "result.json").read_text()), "documents": records(work / "output.jsonl")}


def single_process(input_path: Path, work: Path) -> None:
    """Today's stages, one process on one core, chained as run_stages does; seconds per stage."""
    import torch

    from phi_eval.data.pipeline import check_stage, run_one

    torch.set_num_threads(1)
    results, previous = {}, input_path
    for i, stage in enumerate(json.loads((work / "stages.json").read_text())):
        name = stage["stage"]
        settings = check_stage(name, {k: v for k, v in stage.items() if k != "stage"}, "bench")
        output = work / f"{i}-{name}.jsonl"
        start, start_cpu = time.monotonic(), cpu_seconds()
        run_one(name, settings, previous, output, False)
        results[name] = {"seconds": time.monotonic() - start, "cpu_seconds": cpu_seconds() - start_cpu,
                         "input": count(previous)}
        previous = output
    shutil.copyfile(previous, work / "output.jsonl")
    (work / "result.json").write_text(json.dumps({"stages": results}))


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def run_datatrove(stages: list[dict], prepared: Path, out: Path, tasks: int, workers: int) -> dict:
    """`phi-eval data run` (its own process, as a user runs it) into a copy of the prepared folder,
    where source and annotate are done and so skipped."""
    import subprocess

    import yaml

    shutil.copytree(prepared, out)
    recipe = yaml.safe_load((ROOT / "recipes" / "phi-tiny.yaml").read_text())
    recipe["data"] = {"stages": stages, "val_fraction": 0.05}
    (out.parent / f"{out.name}.yaml").write_text(yaml.safe_dump(recipe))
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "phi_eval.cli", "data", "run", str(out.parent / f"{out.name}.yaml"),
                                "--out", str(out), "--tasks", str(tasks), "--workers", str(workers), "--quiet"],
                               stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"data run --tasks {tasks} --workers {workers} failed; see {out}/logs")
    summary = json.loads((out / "pipeline.json").read_text())
    results = {}
    for i, stage in enumerate(summary["stages"][2:], 2):
        mine = [k for k in summary["phase_seconds"] if k.startswith(f"{i:02d}-")]
        results[stage["stage"]] = {"seconds": sum(summary["phase_seconds"][k] for k in mine),
                                   "cpu_seconds": sum(summary["phase_cpu_seconds"][k] for k in mine),
                                   "input": summary["stages"][i - 1]["documents"]}
    corpus = out / "corpus.jsonl"
    return {"stages": results, "phases": {k: {"seconds": summary["phase_seconds"][k], "cpu_seconds": v}
                                          for k, v in summary["phase_cpu_seconds"].items()},
            "process": {"seconds": time.monotonic() - start, "cpu_seconds": usage.ru_utime + usage.ru_stime},
            "corpus": corpus.read_bytes(), "documents": records(corpus)}


def count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300, help="documents graded by the heuristic")
    parser.add_argument("--tasks", type=int, default=4, help="tasks of the 2-worker run")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens embedded per document (classify)")
    parser.add_argument("--corpus", choices=("stdlib", "large"), default="stdlib",
                        help="stdlib: the standard library; large: it and site-packages, up to --max-docs files")
    parser.add_argument("--max-docs", type=int, default=8000, help="files of --corpus large")
    parser.add_argument("--single", nargs=2, type=Path, metavar=("INPUT", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        return single_process(*args.single)

    from tiny import make_tiny_phi

    from phi_eval.data.distributed.reduce import write_sorted
    from phi_eval.data.distributed.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        embed_dir = make_tiny_phi(tmp / "tiny-phi")
        stages = stage_settings(embed_dir, args.max_tokens)
        prepared, inputs = {}, corpus_inputs(args.corpus, args.max_docs)
        for tasks in (1, args.tasks):  # shards of the prepared corpus for each split (untimed)
            prepared[tasks] = tmp / f"prepared-{tasks}"
            run_pipeline(prefix(args.sample, inputs), prepared[tasks], tasks=tasks, workers=2, progress=False)
            for leftover in ("corpus.jsonl", "pipeline.json"):
                (prepared[tasks] / leftover).unlink()
        single_input = tmp / "annotated.jsonl"
        documents, _ = write_sorted(prepared[1] / "01-annotate", single_input, order=False)
        text_bytes = sum(len(json.loads(line)["text"].encode()) for line in single_input.open())
        print(f"corpus ({args.corpus}): {documents:,} documents, {args.sample} graded", file=sys.stderr)

        one = run_datatrove(prefix(args.sample, inputs) + stages, prepared[1], tmp / "one", 1, 1)
        two = run_datatrove(prefix(args.sample, inputs) + stages, prepared[args.tasks], tmp / "two", args.tasks, 2)
        single = run_single(stages, single_input, tmp / "single")

    rows = []
    for name in STAGES:
        docs = single["stages"][name]["input"]
        (s, sc), (o, oc), (t, tc) = ((r["stages"][name]["seconds"], r["stages"][name]["cpu_seconds"])
                                     for r in (single, one, two))
        rows.append({"stage": name, "documents": docs, "single_docs_per_s": docs / s, "one_worker_docs_per_s": docs / o,
                     "two_workers_docs_per_s": docs / t, "speedup_two_workers": o / t, "overhead_one_worker": o / s - 1,
                     "cpu_seconds": {"single": sc, "one_worker": oc, "two_workers": tc},
                     "cpu_overhead_one_worker": oc / sc - 1, "cpu_extra_two_workers": tc / oc - 1})
    total = {k: sum(r["stages"][n]["seconds"] for n in STAGES) for k, r in (("single", single), ("one", one), ("two", two))}
    cpu = {k: sum(r["stages"][n]["cpu_seconds"] for n in STAGES) for k, r in
           (("single", single), ("one", one), ("two", two))}
    result = {"corpus": args.corpus, "documents": documents, "mean_document_bytes": round(text_bytes / documents), "sample": args.sample,
              "max_tokens": args.max_tokens, "tasks_two_workers": args.tasks, "stages": rows,
              "total_seconds": total, "total_cpu_seconds": cpu,
              "speedup_two_workers": total["one"] / total["two"], "overhead_one_worker": total["one"] / total["single"] - 1,
              "cpu_overhead_one_worker": cpu["one"] / cpu["single"] - 1, "cpu_extra_two_workers": cpu["two"] / cpu["one"] - 1,
              "phases": {"one_worker": one["phases"], "two_workers": two["phases"]},
              "data_run_process": {"one_worker": one["process"], "two_workers": two["process"]},
              "same_corpus_one_vs_two_workers": one["corpus"] == two["corpus"],
              "same_documents_single_vs_datatrove": single["documents"] == one["documents"]}
    OUT.mkdir(parents=True, exist_ok=True)
    name = "bench_data_pipeline" + ("-large" if args.corpus == "large" else "")
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)


def print_tables(result: dict) -> None:
    print("| stage | docs | single docs/s | datatrove 1 worker docs/s | 2 workers docs/s | 2-worker speed-up | "
          "1-worker overhead | CPU s single / 1 worker / 2 workers |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in result["stages"]:
        c = r["cpu_seconds"]
        print(f"| {r['stage']} | {r['documents']:,} | {r['single_docs_per_s']:.1f} | {r['one_worker_docs_per_s']:.1f} | "
              f"{r['two_workers_docs_per_s']:.1f} | {r['speedup_two_workers']:.2f}x | {r['overhead_one_worker']:+.1%} | "
              f"{c['single']:.2f} / {c['one_worker']:.2f} / {c['two_workers']:.2f} |")
    c = result["total_cpu_seconds"]
    print(f"| all four | | | | | {result['speedup_two_workers']:.2f}x | {result['overhead_one_worker']:+.1%} | "
          f"{c['single']:.2f} / {c['one']:.2f} / {c['two']:.2f} |")
    print(f"CPU: 1-worker overhead {result['cpu_overhead_one_worker']:+.1%}, 2 workers' extra CPU "
          f"{result['cpu_extra_two_workers']:+.1%}")
    print("\n| datatrove phase | 1 worker: wall s | CPU s | 2 workers: wall s | CPU s |\n|---|---:|---:|---:|---:|")
    one, two = result["phases"]["one_worker"], result["phases"]["two_workers"]
    for name in one:
        if not name.startswith(("00-", "01-")):  # source and annotate: prepared, skipped
            print(f"| {name} | {one[name]['seconds']:.2f} | {one[name]['cpu_seconds']:.2f} | "
                  f"{two[name]['seconds']:.2f} | {two[name]['cpu_seconds']:.2f} |")
    for k, v in result["data_run_process"].items():
        print(f"data run process ({k}): {v['seconds']:.1f} s wall, {v['cpu_seconds']:.1f} s CPU (start-up included)")
    print(f"same corpus 1 vs 2 workers: {result['same_corpus_one_vs_two_workers']}; same documents as the "
          f"single-process stages: {result['same_documents_single_vs_datatrove']}")


if __name__ == "__main__":
    main()
