"""The cached steps tasks compose: generate completions, execute programs, score log-likelihoods.

Each step reads what the SQLite cache already holds and commits every new result as soon as it
exists, so a killed run resumes where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from phi_eval.cache import make_key
from phi_eval.execution import Limits, Sandbox
from phi_eval.execution.sandbox import VERDICT_RULES
from phi_eval.models import GenerationConfig, GenerationRequest

EXECUTION_CHUNK = 64  # verdicts are committed to the cache after every chunk


@dataclass
class EvalContext:
    """What a task needs from the run: its options, the cache, and the sandbox (started on first use)."""

    options: object  # evaluate.RunOptions
    cache: object
    _sandbox: Sandbox | None = field(default=None, repr=False)

    @property
    def progress(self) -> bool:
        return self.options.progress

    @property
    def limits(self) -> Limits:
        return Limits(timeout_s=self.options.timeout_s)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(workers=self.options.workers, limits=self.limits).__enter__()
        return self._sandbox

    @property
    def protections(self) -> dict | None:
        """The protections the sandbox applied; None if nothing was executed."""
        return self._sandbox.protections if self._sandbox is not None else None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.__exit__(None, None, None)
            self._sandbox = None

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
        if getattr(model, "samples_per_doc", None):  # replay: as many as every covered doc has
            return min(model.samples_per_doc(d["doc_id"]) for d in docs)
        return 1

    def generate(self, model, requests: list[GenerationRequest]) -> list[dict]:
        return generate_with_cache(model, requests, self.cache, self.progress)

    def execute(self, programs: list[tuple[str, str]]) -> list[dict]:
        return execute_with_cache(programs, self.sandbox, self.limits, self.cache, self.progress)

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
    if stored and missing:
        print(f"phi-eval: resuming: {len(requests) - len(missing)} of {len(requests)} completions from the cache")
    for j, completion in model.generate([requests[i] for i in missing], progress=progress):
        i = missing[j]
        results[i] = completion.to_dict()
        if model.identity["backend"] != "replay":
            cache.put("generation", keys[i], results[i])
    return results  # type: ignore[return-value]


def execute_with_cache(programs: list[tuple[str, str]], sandbox, limits: Limits, cache, progress: bool) -> list[dict]:
    keys = [make_key(program, tests, repr(limits), VERDICT_RULES) for program, tests in programs]
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


def loglikelihood_with_cache(model, pairs: list[tuple[str, str]], cache, progress: bool) -> list[tuple[float, bool]]:
    """(log P(continuation | context), is greedy) per pair; new scores are committed in one transaction."""
    keys = [make_key(model.identity, "loglikelihood", context, continuation) for context, continuation in pairs]
    stored = cache.get_many("loglikelihood", keys)
    missing = [i for i, k in enumerate(keys) if k not in stored]
    results = {i: tuple(stored[keys[i]]) for i in range(len(pairs)) if keys[i] in stored}
    if missing:
        scores = model.loglikelihood([pairs[i] for i in missing], progress=progress)
        for i, score in zip(missing, scores):
            results[i] = (float(score[0]), bool(score[1]))
        cache.put_many("loglikelihood", [(keys[i], list(results[i])) for i in missing])
    return [results[i] for i in range(len(pairs))]  # type: ignore[misc]


def loglikelihood_rolling_with_cache(model, texts: list[str], cache, progress: bool) -> list[float]:
    """log P(text) per text (lm-eval's loglikelihood_rolling); new scores are committed in one transaction."""
    keys = [make_key(model.identity, "loglikelihood_rolling", text) for text in texts]
    stored = cache.get_many("loglikelihood", keys)
    missing = [i for i, k in enumerate(keys) if k not in stored]
    results = {i: float(stored[keys[i]]) for i in range(len(texts)) if keys[i] in stored}
    if missing:
        for i, total in zip(missing, model.loglikelihood_rolling([texts[i] for i in missing], progress=progress)):
            results[i] = float(total)
        cache.put_many("loglikelihood", [(keys[i], results[i]) for i in missing])
    return [results[i] for i in range(len(texts))]
