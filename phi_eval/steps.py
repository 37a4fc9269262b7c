"""The cached steps tasks compose: generate completions, execute programs, score log-likelihoods.

Each step reads what the SQLite cache already holds and commits every new result as soon as it
exists, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from phi_eval.cache import make_key
from phi_eval.execution import Limits, Sandbox
from phi_eval.execution.sandbox import VERDICT_RULES
from phi_eval.models import GenerationConfig, GenerationRequest
from phi_eval.models.base import Replayed

LOGLIKELIHOOD_CHUNK = 256  # log-likelihood requests scored (and committed to the cache) together


@dataclass(frozen=True)
class StepSettings:
    """The options of a run that the steps and tasks read (phi_eval.evaluate.RunOptions extends it)."""

    n_samples: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    seed: int = 1234
    workers: int = 4
    timeout_s: float = 3.0
    progress: bool = True
    data_dir: Path | None = None


class LazySandbox:
    """The run's sandbox, started on first use and shared by every context of the run."""

    def __init__(self, workers: int, limits: Limits):
        self.workers, self.limits = workers, limits
        self._sandbox: Sandbox | None = None

    def get(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(workers=self.workers, limits=self.limits).__enter__()
        return self._sandbox

    @property
    def protections(self) -> dict | None:
        """The protections the sandbox applied; None if nothing was executed."""
        return self._sandbox.protections if self._sandbox is not None else None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.__exit__(None, None, None)
            self._sandbox = None


@dataclass(frozen=True)
class EvalContext:
    """What a task needs from the run: its settings, the cache, and the sandbox (started on first use)."""

    options: StepSettings
    cache: object
    sandboxes: LazySandbox = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.sandboxes is None:
            object.__setattr__(self, "sandboxes", LazySandbox(self.options.workers, self.limits))

    def with_options(self, **changes) -> "EvalContext":
        """The same run (cache, sandbox) with some settings changed."""
        return replace(self, options=replace(self.options, **changes))

    @property
    def progress(self) -> bool:
        return self.options.progress

    @property
    def limits(self) -> Limits:
        return Limits(timeout_s=self.options.timeout_s)

    @property
    def sandbox(self) -> Sandbox:
        return self.sandboxes.get()

    @property
    def protections(self) -> dict | None:
        return self.sandboxes.protections

    def close(self) -> None:
        self.sandboxes.close()

    def generation_config(self, max_new_tokens: int, stop: tuple[str, ...]) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.options.max_new_tokens or max_new_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            stop=stop,
            seed=self.options.seed,
        )

    def samples_per_doc(self, model, docs: list[dict]) -> int:
        if self.options.n_samples:
            return self.options.n_samples
        if isinstance(model, Replayed):  # as many as every covered doc has
            return min(model.samples_per_doc(d["doc_id"]) for d in docs)
        return 1

    def generate(self, model, requests: list[GenerationRequest]) -> list[dict]:
        return generate_with_cache(model, requests, self.cache, self.progress)

    def execute(self, programs: list[tuple[str, str]]) -> list[dict]:
        return execute_with_cache(programs, self.sandbox, self.limits, self.cache, self.progress,
                                  self.options.workers)

    def loglikelihood(self, model, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return loglikelihood_with_cache(model, pairs, self.cache, self.progress)

    def loglikelihood_rolling(self, model, texts: list[str]) -> list[float]:
        return loglikelihood_rolling_with_cache(model, texts, self.cache, self.progress)


def generate_with_cache(model, requests: list[GenerationRequest], cache, progress: bool) -> list[dict]:
    """Completions for all requests; each newly generated one is committed to the cache at once."""
    keys = [make_key(model.identity, r.cache_key()) for r in requests]
    stored = cache.get_many("generation", keys) if model.identity["backend"] != "replay" else {}
    results: list[dict | None] = [stored.get(k) for k in keys]  # type: ignore[misc]
    missing = [i for i, r in enumerate(results) if r is None]
    if stored:
        print(f"phi-eval: resuming: {len(requests) - len(missing)} of {len(requests)} completions from the cache",
              file=sys.stderr)
    for j, completion in model.generate([requests[i] for i in missing], progress=progress):
        i = missing[j]
        results[i] = completion.to_dict()
        if model.identity["backend"] != "replay":
            cache.put("generation", keys[i], results[i])
    return results  # type: ignore[return-value]


def execute_with_cache(programs: list[tuple[str, str]], sandbox, limits: Limits, cache, progress: bool,
                       workers: int = 1) -> list[dict]:
    """A verdict per (program, tests); each is committed to the cache as soon as its program ends."""
    keys = [make_key(program, tests, repr(limits), VERDICT_RULES) for program, tests in programs]
    stored = cache.get_many("execution", keys)
    verdicts: list[dict | None] = [stored.get(k) for k in keys]  # type: ignore[misc]
    missing = [i for i, v in enumerate(verdicts) if v is None]
    if stored:
        print(f"phi-eval: resuming: {len(programs) - len(missing)} of {len(programs)} verdicts from the cache",
              file=sys.stderr)
    # One program per call, as many calls as the sandbox has workers: a verdict is stored when it exists.
    with tqdm(total=len(missing), desc="execute", unit="prog", disable=not progress) as bar, \
            ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(sandbox.check_all, [programs[i]]): i for i in missing}
        try:
            for future in as_completed(futures):
                i, verdict = futures[future], future.result()[0]
                verdicts[i] = {"passed": verdict.passed, "status": verdict.status, "reason": verdict.reason,
                               "duration_s": round(verdict.duration_s, 4)}
                cache.put("execution", keys[i], verdicts[i])
                bar.update()
        except BaseException:  # Ctrl-C or a full disk: programs not started yet never start
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return verdicts  # type: ignore[return-value]


def loglikelihood_with_cache(model, pairs: list[tuple[str, str]], cache, progress: bool) -> list[tuple[float, bool]]:
    """(log P(continuation | context), is greedy) per pair, committed to the cache chunk by chunk."""
    keys = [make_key(model.identity, "loglikelihood", context, continuation) for context, continuation in pairs]
    scores = scored_in_chunks(keys, pairs, model.loglikelihood, cache, progress, "loglikelihood")
    return [(float(score[0]), bool(score[1])) for score in scores]


def loglikelihood_rolling_with_cache(model, texts: list[str], cache, progress: bool) -> list[float]:
    """log P(text) per text (lm-eval's loglikelihood_rolling), committed to the cache chunk by chunk."""
    keys = [make_key(model.identity, "loglikelihood_rolling", text) for text in texts]
    return [float(score) for score in scored_in_chunks(keys, texts, model.loglikelihood_rolling, cache, progress,
                                                       "loglikelihood_rolling")]


def scored_in_chunks(keys: list[str], requests: list, score, cache, progress: bool, what: str) -> list:
    """score(requests) with a commit to the cache after every LOGLIKELIHOOD_CHUNK requests, so a killed run
    keeps its finished chunks. The chunks are fixed slices of the whole list and a chunk with anything
    missing is scored whole: every request is scored in the same batches as in an uninterrupted run, so a
    resumed run's numbers equal it exactly (batch composition moves float sums by ~1e-4)."""
    stored = cache.get_many("loglikelihood", keys)
    if stored:
        done = sum(key in stored for key in keys)
        print(f"phi-eval: resuming: {done} of {len(keys)} {what} requests already scored", file=sys.stderr)
    chunks = [range(start, min(start + LOGLIKELIHOOD_CHUNK, len(keys)))
              for start in range(0, len(keys), LOGLIKELIHOOD_CHUNK)]
    todo = [chunk for chunk in chunks if any(keys[i] not in stored for i in chunk)]
    with tqdm(total=len(keys), initial=len(keys) - sum(map(len, todo)), desc=what, unit="req",
              disable=not progress) as bar:
        for chunk in todo:
            scores = score([requests[i] for i in chunk], progress=False)
            cache.put_many("loglikelihood", [(keys[i], list(s) if isinstance(s, tuple) else s)
                                             for i, s in zip(chunk, scores)])
            stored.update((keys[i], s) for i, s in zip(chunk, scores))
            bar.update(len(chunk))
    return [stored[key] for key in keys]
