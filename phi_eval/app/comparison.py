"""A side-by-side comparison: one prompt, two to four models, each side streamed in a thread of its own.

A side's thread gets its model from the shared pool (showing what the load is doing and for how long),
waits for a generation slot and appends text as the model decodes it, so a slow model never holds back a
fast one. The UI's event only watches the sides and renders what they have so far (at least once a second,
so waiting times count up); a side can be stopped or run again on its own. Token counts and tokens/s are
kept up to date while a side streams and stay when it is stopped.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generator, Iterator

from phi_eval.app.diff import word_diff
from phi_eval.app.pool import ModelPool
from phi_eval.app.repetition import repetition
from phi_eval.errors import UsageError
from phi_eval.models import Completion, GenerationConfig, GenerationRequest
from phi_eval.models.base import Streaming, TokenCounts
from phi_eval.report.results import package_versions

SIDES = "ABCD"
# Pieces arriving faster are rendered together: at most ~10 updates a second, as chat UIs batch them. Each update
# costs gradio's server CPU that the models need (at 0.05 s: 66 updates for 64 tokens at 14 tokens/s; 0.1 s: 45).
RENDER_INTERVAL_S = 0.1
TICK_S = 1.0  # while nothing changes (a model loading), the view still updates this often
COUNT_INTERVAL_S = 0.2  # a streaming side's tokens are recounted at most this often
RECORD_VERSION = 1
log = logging.getLogger(__name__)
versions = functools.cache(package_versions)  # the record is rebuilt on every render; versions do not change


def completion_pieces(model, request: GenerationRequest) -> Generator[str, None, Completion]:
    """Text pieces of one completion as the model produces them; returns the finished Completion.
    A backend without token streaming yields its whole completion as one piece."""
    if isinstance(model, Streaming):
        return (yield from model.stream(request))
    (_, completion), = model.generate([request], progress=False)
    if completion.text:
        yield completion.text
    return completion


@dataclass
class SideRun:
    """One side's completion: what the UI shows and the export records."""

    side: int
    spec: str
    prompt: str
    config: GenerationConfig
    override: bool
    status: str = "loading"  # loading -> queued -> streaming -> done | stopped | error
    stage: str = "locating the weights"  # what a loading or queued side waits for
    stage_since: float = field(default_factory=time.time)
    text: str = ""
    error: str | None = None
    finish_reason: str | None = None  # "stop", "length", or "stopped" by the user
    output_tokens: int | None = None
    identity: dict | None = None
    load_s: float | None = None  # from the request to the model being ready (waiting for its load included)
    was_loaded: bool | None = None  # the model was already in memory when the side asked for it
    queue_s: float | None = None  # then waiting for a generation slot
    time_to_first_token_s: float | None = None  # from the start of generation
    generation_s: float | None = None  # so far, while streaming
    stream_started: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def label(self) -> str:
        return SIDES[self.side]

    @property
    def tokens_per_s(self) -> float | None:
        if self.output_tokens is None or not self.generation_s:
            return None
        return self.output_tokens / self.generation_s

    def waited_s(self) -> float:
        """Seconds spent in the current stage (loading or queued)."""
        return max(0.0, time.time() - self.stage_since)

    def record(self, n: int) -> dict:
        return {
            "side": self.label,
            "spec": self.spec,
            "model": self.identity,
            "settings": self.config.to_dict(),
            "override": self.override,
            "status": self.status,
            "error": self.error,
            "completion": self.text,
            "finish_reason": self.finish_reason,
            "metrics": {
                "time_to_first_token_s": self.time_to_first_token_s,
                "tokens_per_s": self.tokens_per_s,
                "output_tokens": self.output_tokens,
                "generation_s": self.generation_s,
                "load_s": self.load_s,
                "model_was_loaded": self.was_loaded,
                "queue_s": self.queue_s,
            },
            "repetition": {"n": n, "score": repetition(self.text, n).score},
        }


class Comparison:
    """One browser session's side-by-side: its prompt and the latest run of each side."""

    def __init__(self, pool: ModelPool):
        self.pool = pool
        self.prompt = ""
        self.shared: GenerationConfig | None = None
        self.runs: list[SideRun | None] = [None] * len(SIDES)
        self._changed = threading.Condition()
        self._version = 0

    def __deepcopy__(self, memo):
        # gradio deep-copies a session state's initial value; this object is made per session already and
        # holds threads, so the copy is the object itself.
        return self

    def start(self, prompt: str, shared: GenerationConfig,
              sides: dict[int, tuple[str, GenerationConfig, bool]]) -> list[SideRun]:
        """Start a new comparison: `sides` maps a side's index to (model spec, its config, overridden?)."""
        if not prompt.strip():
            raise UsageError("the prompt is empty: type one or pick a preset")
        self.prompt, self.shared = prompt, shared
        for index, run in enumerate(self.runs):
            if run and index not in sides:
                run.cancelled.set()
                self.runs[index] = None
        return [self.run_side(index, *side) for index, side in sides.items()]

    def run_side(self, index: int, spec: str, config: GenerationConfig, override: bool) -> SideRun:
        """(Re)run one side on the comparison's prompt, replacing (and stopping) its previous run."""
        if not self.prompt:
            raise UsageError("nothing to retry yet: press Generate first")
        if self.runs[index]:
            self.runs[index].cancelled.set()
        run = SideRun(index, spec.strip(), self.prompt, config, override)
        self.runs[index] = run
        threading.Thread(target=self._generate, args=(run,), name=f"side-{run.label}", daemon=True).start()
        return run

    def stop(self, index: int) -> None:
        if self.runs[index]:
            self.runs[index].cancelled.set()

    def stop_all(self) -> None:
        for index in range(len(SIDES)):
            self.stop(index)

    def watch(self, runs: list[SideRun]) -> Iterator[None]:
        """Yield after each change (at most every RENDER_INTERVAL_S), a last time once all `runs` finished."""
        seen = -1
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._version != seen, timeout=TICK_S)
                seen = self._version
            done = all(run.finished.is_set() for run in runs)
            yield
            if done:
                return
            time.sleep(RENDER_INTERVAL_S)

    def record(self, n: int, pair: tuple[int, int]) -> dict:
        """The exportable comparison: prompt, settings, model identities, completions, metrics."""
        a, b = (self.runs[i] for i in pair)
        return {
            "phi_eval_comparison": RECORD_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "prompt": self.prompt,
            "settings": self.shared.to_dict() if self.shared else None,
            "sides": [run.record(n) for run in self.runs if run],
            "diff": {"sides": [a.label, b.label], "similarity": word_diff(a.text, b.text).similarity}
            if a and b else None,
            "versions": versions(),
        }

    # -- a side's thread ------------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _set(self, run: SideRun, **fields) -> None:
        for name, value in fields.items():
            setattr(run, name, value)
        self._notify()

    def _generate(self, run: SideRun) -> None:
        requested = time.perf_counter()
        try:
            spec = self.pool.resolve(run.spec)  # a packaged model's weights are located (or assembled) here
            self._set(run, stage="starting the load", stage_since=time.time(), was_loaded=self.pool.is_loaded(spec))
            loading = threading.Thread(target=self._follow_load, args=(run, spec), daemon=True)
            loading.start()
            with self.pool.use(spec) as model:
                self._set(run, status="queued", stage="waiting for a free generation slot", stage_since=time.time(),
                          identity=dict(model.identity), load_s=time.perf_counter() - requested)
                ready = time.perf_counter()
                with self.pool.stream_slot(run.cancelled) as got_slot:
                    if got_slot:
                        self._set(run, status="streaming", queue_s=time.perf_counter() - ready)
                        self._stream(run, model)
        except UsageError as e:
            run.error = str(e)
        except Exception as e:  # shown as one line in the UI; the traceback goes to the server's log
            log.exception("side %s (%s) failed", run.label, run.spec)
            run.error = f"internal error ({type(e).__name__}: {e}); see the app's log"
        finally:
            if run.error:
                status = "error"
            elif run.cancelled.is_set() and run.finish_reason is None:
                status, run.finish_reason = "stopped", "stopped"
            else:
                status = "done"
            run.status = status
            run.finished.set()
            self._notify()

    def _follow_load(self, run: SideRun, spec) -> None:
        """While the side waits for its model, show the pool's stage of that model's load (and since when)."""
        while run.status == "loading" and not run.finished.is_set():
            stage = self.pool.stage(spec)
            if stage and (run.stage, run.stage_since) != stage:
                self._set(run, stage=stage[0], stage_since=stage[1])
            time.sleep(0.1)

    def _stream(self, run: SideRun, model) -> None:
        pieces = completion_pieces(model, GenerationRequest(run.prompt, run.config))
        count = token_counter(model)
        started = run.stream_started = time.perf_counter()
        counted = 0.0
        try:
            while not run.cancelled.is_set():
                try:
                    piece = next(pieces)
                except StopIteration as end:
                    completion: Completion = end.value
                    # The model's own text and count are authoritative (the text equals the pieces for
                    # prefix-stable tokenizers).
                    self._set(run, text=completion.text, finish_reason=completion.finish_reason,
                              output_tokens=completion.n_tokens, generation_s=time.perf_counter() - started)
                    return
                now = time.perf_counter()
                if run.time_to_first_token_s is None:
                    run.time_to_first_token_s = now - started
                run.text += piece
                if now - counted >= COUNT_INTERVAL_S:
                    run.output_tokens, counted = count(run.text), now
                self._set(run, generation_s=now - started)
        finally:
            pieces.close()
            if run.finish_reason is None:  # stopped: count what was streamed
                run.output_tokens = count(run.text)
                run.generation_s = time.perf_counter() - started


def token_counter(model):
    """How many tokens a streamed text is: the model's tokenizer where it has one (hf:, gguf:), else the
    number of words and punctuation marks (openai: servers report their count only at the end)."""
    if isinstance(model, TokenCounts):
        return model.count_tokens
    return lambda text: len(re.findall(r"\w+|[^\w\s]", text))
