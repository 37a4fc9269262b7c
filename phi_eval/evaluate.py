"""`phi-eval run`: for each model and task, turn docs into scored sample records, then metrics, then files.

Data flows one way: task docs -> the task's cached steps (phi_eval.steps: generate, execute,
log-likelihood) -> per-sample records -> metrics -> results.json and samples_<task>.jsonl.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_eval import paths
from phi_eval.cache import Cache, NoCache
from phi_eval.contamination.report import load_report
from phi_eval.contamination.subsets import contamination_scores
from phi_eval.errors import UsageError
from phi_eval.models import load_model
from phi_eval.report.results import RunRecorder, write_samples
from phi_eval.steps import EvalContext
from phi_eval.tasks.base import Task


@dataclass
class RunOptions:
    out: Path
    limit: int | None = None
    n_samples: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    batch_size: int | str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    data_dir: Path | None = None
    seed: int = 1234
    use_cache: bool = True
    workers: int = 4
    timeout_s: float = 3.0
    progress: bool = True
    contamination: Path | None = None  # a contamination report: score its flagged and clean items apart


def run(specs: list, tasks: list[Task], options: RunOptions, argv: list[str] | None = None) -> list[Path]:
    """Evaluate every model spec on every task; returns the results.json paths written."""
    docs_by_task = {task.name: load_docs(task, options) for task in tasks}
    report = load_report(options.contamination) if options.contamination else None
    cache = Cache(paths.cache_path()) if options.use_cache else NoCache()
    ctx = EvalContext(options, cache)
    written = []
    try:
        for spec in specs:
            model = load_model(spec, device=options.device, dtype=options.dtype, batch_size=options.batch_size)
            recorder = RunRecorder(spec, model, options, argv, lambda: ctx.protections)
            for task in tasks:
                docs = docs_by_task[task.name]
                if getattr(model, "samples_per_doc", None):  # replay: only the docs the file covers
                    docs = [d for d in docs if model.samples_per_doc(d["doc_id"])]
                    if not docs:
                        print(f"phi-eval: {spec.spec} has no samples for {task.name}; skipped")
                        continue
                records = task.samples(model, docs, ctx)
                out_dir = options.out / spec.slug
                write_samples(out_dir / f"samples_{task.name}.jsonl", records)
                recorder.add_task(task, task.metrics(records), n_original=len(docs_by_task[task.name]),
                                  n_effective=len(docs), n_samples=task.n_samples(records),
                                  generation=task.generation(ctx))
                if report is not None:
                    recorder.add_contamination(task.name, contamination_scores(
                        report, options.contamination, task.name, records))
            if not recorder.tasks:
                raise UsageError(f"{spec.spec}: nothing to evaluate for the tasks given")
            written.append(recorder.write(options.out / spec.slug / "results.json"))
    finally:
        ctx.close()
        cache.close()
    return written


def load_docs(task: Task, options: RunOptions) -> list[dict]:
    docs = task.load_docs(options.data_dir)
    return docs[: options.limit] if options.limit else docs
