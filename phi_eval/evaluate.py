"""`phi-eval run`: for each model and task, turn docs into scored sample records, then metrics, then files.

Data flows one way: task docs -> the task's cached steps (phi_eval.steps: generate, execute,
log-likelihood) -> per-sample records -> metrics -> results.json and samples_<task>.jsonl.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from phi_eval import distributed, paths
from phi_eval.cache import Cache, NoCache
from phi_eval.contamination.report import load_report
from phi_eval.contamination.subsets import contamination_scores
from phi_eval.errors import UsageError
from phi_eval.models import load_model
from phi_eval.models.base import Replayed
from phi_eval.report.results import RunRecorder, headline, write_samples
from phi_eval.steps import EvalContext, StepSettings
from phi_eval.tasks.base import Task


@dataclass(frozen=True, kw_only=True)
class RunOptions(StepSettings):
    """`phi-eval run`'s options: the steps' settings plus where the run goes and how models load."""

    out: Path
    limit: int | None = None
    batch_size: int | str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    use_cache: bool = True
    contamination: Path | None = None  # a contamination report: score its flagged and clean items apart
    num_fewshot: int | None = None  # shots for the tasks that take them (multiple choice); None: each task's own


@dataclass(frozen=True)
class RunResult:
    """One model's evaluation: its results.json, where it was written and what it holds."""

    path: Path
    document: dict

    def headline(self) -> str:
        return headline(self.document)


def run(specs: list, tasks: list[Task], options: RunOptions, argv: list[str] | None = None) -> list[RunResult]:
    """Evaluate every model spec on every task; returns each model's written results.

    Under a launcher (phi_eval.distributed) every process runs its share of each task's docs and the
    main process, alone, merges the records, computes metrics and writes files (the others return []).
    """
    processes = distributed.current()
    tasks = with_num_fewshot(tasks, options.num_fewshot)
    docs_by_task = {task.name: load_docs(task, options) for task in tasks}
    report = load_report(options.contamination) if options.contamination else None
    cache = open_cache(options, processes)
    ctx = EvalContext(replace(options, progress=options.progress and processes.is_main), cache)
    written = []
    try:
        for spec in specs:
            model = load_model(spec, device=processes.device_for(options.device), dtype=options.dtype,
                               batch_size=options.batch_size)
            recorder = RunRecorder(spec, model, options, argv, lambda: ctx.protections, processes=processes.count)
            evaluated = []
            for task in tasks:
                docs = docs_by_task[task.name]
                if isinstance(model, Replayed):  # the file must cover the docs asked for
                    covered = [d for d in docs if model.samples_per_doc(d["doc_id"])]
                    if not covered:
                        if processes.is_main:
                            print(f"phi-eval: {spec.spec} has no samples for {task.name}; skipped", file=sys.stderr)
                        continue
                    if len(covered) < len(docs):
                        raise UsageError(replay_coverage(spec.spec, task.name, covered, docs))
                evaluated.append(task.name)
                records = processes.gather(share_samples(task, model, docs, ctx, processes), docs)
                if not processes.is_main:
                    continue
                out_dir = options.out / spec.slug
                write_samples(out_dir / f"samples_{task.name}.jsonl", records)
                recorder.add_task(task, task.metrics(records), n_original=len(docs_by_task[task.name]),
                                  n_effective=len(docs), n_samples=task.n_samples(records),
                                  generation=task.generation(ctx))
                if report is not None:
                    recorder.add_contamination(task.name, contamination_scores(
                        report, options.contamination, task.name, records))
            if not evaluated:
                raise UsageError(f"{spec.spec}: nothing to evaluate for the tasks given")
            if processes.is_main:
                path = options.out / spec.slug / "results.json"
                written.append(RunResult(path, recorder.write(path)))
    finally:
        ctx.close()
        cache.close()
        processes.close()
    return written


def replay_coverage(spec: str, task: str, covered: list[dict], docs: list[dict]) -> str:
    """A partial replay file would score as if it were the whole benchmark: say so and how to ask for the part."""
    ids = {d["doc_id"] for d in covered}
    prefix = next(i for i, d in enumerate(docs) if d["doc_id"] not in ids)
    hint = f"--limit {prefix} to score only the first {prefix}" if prefix else "--limit N for the first N it covers"
    return (f"{spec} covers {len(covered)} of {len(docs)} {task} problems (none for {docs[prefix]['doc_id']}); "
            f"give samples for every problem, or {hint}")


def open_cache(options: RunOptions, processes: distributed.Processes):
    if not options.use_cache:
        return NoCache()
    # The main process creates the file and switches it to WAL before the others connect; then every
    # process commits on its own connection, one writer at a time (the busy timeout queues the rest).
    cache = Cache(paths.cache_path()) if processes.is_main else None
    processes.barrier()
    return cache or Cache(paths.cache_path())


def share_samples(task: Task, model, docs: list[dict], ctx: EvalContext,
                  processes: distributed.Processes) -> list[dict]:
    """This process's records of a task: all of them in a single-process run."""
    if not processes.sharded:
        return task.samples(model, docs, ctx)
    share = processes.shard(docs)
    if not share:
        return []
    if isinstance(model, Replayed) and not ctx.options.n_samples:
        # A replay file gives each doc as many samples as the least-covered doc has: over the task, not the share.
        ctx = ctx.with_options(n_samples=ctx.samples_per_doc(model, docs))
    return task.samples(model, share, ctx)


def with_num_fewshot(tasks: list[Task], num_fewshot: int | None) -> list[Task]:
    """--num-fewshot N for the tasks that take it; the others keep their fixed prompt, and the user is told."""
    if num_fewshot is None:
        return tasks
    if num_fewshot < 0:
        raise UsageError("--num-fewshot must be 0 or more")
    fixed = [task.name for task in tasks if not getattr(task, "accepts_num_fewshot", False)]
    if fixed:
        print(f"phi-eval: --num-fewshot does not apply to {', '.join(fixed)} (fixed prompts); they keep theirs",
              file=sys.stderr)
    return [replace(task, n_shot=num_fewshot) if getattr(task, "accepts_num_fewshot", False) else task
            for task in tasks]


def load_docs(task: Task, options: RunOptions) -> list[dict]:
    docs = task.load_docs(options.data_dir)
    return task.limit_docs(docs, options.limit) if options.limit else docs
