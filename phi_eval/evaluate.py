"""`phi-eval run`: for each model and task, generate (resuming from the cache), execute, score, write.

Data flows one way: task docs -> generation requests -> completions (cached one by one)
-> programs run in the sandbox (cached verdicts) -> per-sample records -> metrics -> files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from phi_eval import paths
from phi_eval.cache import Cache, NoCache, make_key
from phi_eval.contamination.report import load_report
from phi_eval.contamination.subsets import contamination_scores
from phi_eval.errors import UsageError
from phi_eval.execution import Limits, Sandbox
from phi_eval.metrics import pass_at_k_metrics
from phi_eval.models import GenerationConfig, GenerationRequest, load_model
from phi_eval.report.results import RunRecorder, write_samples
from phi_eval.tasks.base import CodeTask, short_hash

EXECUTION_CHUNK = 64  # verdicts are committed to the cache after every chunk


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


def run(specs: list, tasks: list[CodeTask], options: RunOptions, argv: list[str] | None = None) -> list[Path]:
    """Evaluate every model spec on every task; returns the results.json paths written."""
    docs_by_task = {task.name: load_docs(task, options) for task in tasks}
    report = load_report(options.contamination) if options.contamination else None
    cache = Cache(paths.cache_path()) if options.use_cache else NoCache()
    written = []
    try:
        with Sandbox(workers=options.workers, limits=execution_limits(options)) as sandbox:
            for spec in specs:
                model = load_model(spec, device=options.device, dtype=options.dtype, batch_size=options.batch_size)
                recorder = RunRecorder(spec, model, options, argv, sandbox.protections)
                for task in tasks:
                    docs = docs_by_task[task.name]
                    if getattr(model, "samples_per_doc", None):  # replay: only the docs the file covers
                        docs = [d for d in docs if model.samples_per_doc(d["doc_id"])]
                        if not docs:
                            print(f"phi-eval: {spec.spec} has no samples for {task.name}; skipped")
                            continue
                    records, metrics, n_samples = evaluate_task(model, task, docs, options, cache, sandbox)
                    out_dir = options.out / spec.slug
                    write_samples(out_dir / f"samples_{task.name}.jsonl", records)
                    recorder.add_task(task, metrics, n_original=len(docs_by_task[task.name]),
                                      n_effective=len(docs), n_samples=n_samples,
                                      generation=generation_config(task, options).to_dict())
                    if report is not None:
                        recorder.add_contamination(task.name, contamination_scores(
                            report, options.contamination, task.name, records))
                if not recorder.tasks:
                    raise UsageError(f"{spec.spec}: nothing to evaluate for the tasks given")
                written.append(recorder.write(options.out / spec.slug / "results.json"))
    finally:
        cache.close()
    return written


def execution_limits(options: RunOptions) -> Limits:
    return Limits(timeout_s=options.timeout_s)


def load_docs(task: CodeTask, options: RunOptions) -> list[dict]:
    docs = task.load_docs(options.data_dir)
    return docs[: options.limit] if options.limit else docs


def generation_config(task: CodeTask, options: RunOptions) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=options.max_new_tokens or task.max_new_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        stop=task.stop,
        seed=options.seed,
    )


def samples_per_doc(model, docs: list[dict], options: RunOptions) -> int:
    if options.n_samples:
        return options.n_samples
    if getattr(model, "samples_per_doc", None):  # replay: as many as every covered doc has
        return min(model.samples_per_doc(d["doc_id"]) for d in docs)
    return 1


def evaluate_task(model, task: CodeTask, docs: list[dict], options: RunOptions, cache, sandbox):
    config = generation_config(task, options)
    n = samples_per_doc(model, docs, options)
    requests = [GenerationRequest(task.prompt(doc), config, s, doc["doc_id"]) for doc in docs for s in range(n)]
    completions = generate_with_cache(model, requests, cache, options.progress)

    programs = [(task.program(docs[i // n], c["text"]), task.tests(docs[i // n])) for i, c in enumerate(completions)]
    verdicts = execute_with_cache(programs, sandbox, execution_limits(options), cache, options.progress)

    records, correct_per_doc = [], []
    for d, doc in enumerate(docs):
        correct = 0
        for s in range(n):
            i = d * n + s
            verdict = verdicts[i]
            correct += verdict["passed"]
            records.append({
                "doc_id": doc["doc_id"],
                "sample_index": s,
                "prompt": requests[i].prompt,
                "completion": completions[i]["text"],
                "finish_reason": completions[i]["finish_reason"],
                "passed": verdict["passed"],
                "status": verdict["status"],
                "error_kind": None if verdict["passed"] else verdict["status"],
                "reason": verdict["reason"],
                "duration_s": verdict["duration_s"],
                "doc_hash": short_hash(repr(sorted((k, str(v)) for k, v in doc.items()))),
                "prompt_hash": short_hash(requests[i].prompt),
                "target_hash": short_hash(task.tests(doc)),
            })
        correct_per_doc.append((n, correct))
    return records, pass_at_k_metrics(correct_per_doc), n


def generate_with_cache(model, requests: list[GenerationRequest], cache, progress: bool) -> list[dict]:
    """Completions for all requests; each newly generated one is committed to the cache at once."""
    keys = [make_key(model.identity, r.cache_key()) for r in requests]
    stored = cache.get_many("generation", keys) if model.identity["backend"] != "replay" else {}
    results: list[dict | None] = [stored.get(k) for k in keys]  # type: ignore[misc]
    missing = [i for i, r in enumerate(results) if r is None]
    if stored and missing:
        print(f"phi-eval: resuming: {len(requests) - len(missing)} of {len(requests)} completions from the cache")
    for j, completion in model.generate([requests[i] for i in missing], progress=progress):
        i = missing[j]
        results[i] = completion.to_dict()
        if model.identity["backend"] != "replay":
            cache.put("generation", keys[i], results[i])
    return results  # type: ignore[return-value]


def execute_with_cache(programs: list[tuple[str, str]], sandbox, limits: Limits, cache, progress: bool) -> list[dict]:
    keys = [make_key(program, tests, repr(limits)) for program, tests in programs]
    stored = cache.get_many("execution", keys)
    verdicts: list[dict | None] = [stored.get(k) for k in keys]  # type: ignore[misc]
    missing = [i for i, v in enumerate(verdicts) if v is None]
    bar = tqdm(total=len(missing), desc="execute", unit="prog", disable=not progress)
    for start in range(0, len(missing), EXECUTION_CHUNK):
        chunk = missing[start:start + EXECUTION_CHUNK]
        for i, verdict in zip(chunk, sandbox.check_all([programs[i] for i in chunk], progress=False)):
            verdicts[i] = {"passed": verdict.passed, "status": verdict.status, "reason": verdict.reason,
                           "duration_s": round(verdict.duration_s, 4)}
            cache.put("execution", keys[i], verdicts[i])
        bar.update(len(chunk))
    bar.close()
    return verdicts  # type: ignore[return-value]
