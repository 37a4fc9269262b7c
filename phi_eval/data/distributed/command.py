"""`phi-eval data run RECIPE.yaml`: a recipe's data stages on datatrove (parsing only; runner.py runs)."""
from __future__ import annotations

import sys
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser("run", help="run a recipe's data.stages on datatrove (local, Slurm or Ray)",
                                 description="Run a recipe's data.stages as sharded, resumable datatrove phases; "
                                 "the final corpus is OUT/corpus.jsonl (in the single-process stages' order), the summary "
                                 "OUT/pipeline.json.")
    parser.add_argument("recipe", help="recipe YAML (or a built-in recipe name) with data.stages")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, as for `train`")
    parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
    parser.add_argument("--tasks", type=int, default=1, help="shards the corpus is split into (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="tasks run at once (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/data"), help="output folder (default runs/data)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                        help="parquet: also the final corpus as OUT/corpus/NNNNN.parquet, one shard per task")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    slurm = parser.add_argument_group("Slurm")
    slurm.add_argument("--partition", help="partition the job arrays run on")
    slurm.add_argument("--time", default="24:00:00", help="time limit per task (default 24:00:00)")
    slurm.add_argument("--mem-per-cpu-gb", type=float, default=2, help="memory per task (Slurm, Ray; default 2)")
    slurm.add_argument("--env-command", help="shell line that activates phi-eval in a job (default: this venv)")


def run_command(args) -> None:
    from phi_eval.data.distributed.runner import run_pipeline
    from phi_eval.errors import UsageError
    from phi_eval.train.recipe import load_recipe

    if args.tasks < 1 or args.workers < 1:
        raise UsageError("--tasks and --workers must be at least 1")
    recipe = load_recipe(args.recipe, args.overrides)
    if not recipe.data.stages:
        raise UsageError(f"{args.recipe}: no data.stages to run; list stages (source, annotate, ...) in data.stages")
    options = {"partition": args.partition, "time": args.time, "mem_per_cpu_gb": args.mem_per_cpu_gb,
               "env_command": args.env_command}
    summary = run_pipeline(recipe.data.stages, args.out, executor=args.executor, tasks=args.tasks,
                           workers=args.workers, progress=not args.quiet, options=options,
                           output_format=args.format)
    if summary is None:
        return
    for stage in summary["stages"]:
        print(f"{stage['stage']}: {stage['documents']:,} documents in {stage['shards']} shards -> {stage['output']}")
    corpus = summary["corpus"]
    print(f"corpus: {corpus['documents']:,} documents -> {corpus['path']} (sha256 {corpus['sha256'][:12]})",
          file=sys.stdout)
    if "parquet" in corpus:
        print(f"parquet: {len(corpus['parquet']['shards'])} shards -> {corpus['parquet']['folder']}")
