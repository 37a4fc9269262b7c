"""One thread that owns the model: every model call of the server runs here, one at a time, because a
transformers model with its KV cache is not safe to call from several threads.

Generation requests that are waiting together and share their decoding settings run as one batch:
non-streamed ones through HFModel.generate, streamed ones through its decoding loop, each row's text sent
as it is decoded (HFModel seeds sampling per request and its batches are invariant, so a batched output
equals the one-by-one output). Scoring runs alone, in arrival order.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Callable

from phi_eval.models.base import Completion, GenerationRequest, unsettled_tail

MAX_BATCH = 32  # requests decoded together at most


@dataclass
class _Job:
    future: Future = field(default_factory=Future)


@dataclass
class _Generate(_Job):
    requests: list[GenerationRequest] = field(default_factory=list)


@dataclass
class _Stream(_Job):
    request: GenerationRequest | None = None
    emit: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Call(_Job):
    function: Callable[[], object] | None = None


class ModelWorker:
    def __init__(self, model, max_batch: int = MAX_BATCH):
        self.model = model
        self.max_batch = max_batch
        self._jobs: queue.Queue = queue.Queue()
        self._backlog: deque = deque()  # jobs taken off the queue while looking for batch mates
        self._thread = threading.Thread(target=self._run, name="phi-eval-serve-model", daemon=True)
        self._thread.start()

    def generate(self, requests: list[GenerationRequest]) -> Future:
        """A Future of the Completions of `requests` (one decoding config), in order."""
        return self._submit(_Generate(requests=requests))

    def stream(self, request: GenerationRequest, emit: Callable[[str], None],
               cancelled: threading.Event) -> Future:
        """Calls emit(piece) for each piece of the completion as it is decoded; a Future of the Completion
        (None if `cancelled` was set first, e.g. because the client went away)."""
        return self._submit(_Stream(request=request, emit=emit, cancelled=cancelled))

    def call(self, function: Callable[[], object]) -> Future:
        """Run any other model work (scoring) on the model thread."""
        return self._submit(_Call(function=function))

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _submit(self, job: _Job) -> Future:
        self._jobs.put(job)
        return job.future

    def _next(self):
        return self._backlog.popleft() if self._backlog else self._jobs.get()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                if isinstance(job, _Generate):
                    self._generate([job, *self._batch_mates(job)])
                elif isinstance(job, _Stream):
                    self._streams([job, *self._batch_mates(job)])
                else:
                    job.future.set_result(job.function())
            except BaseException as error:  # the caller sees it; the server lives on
                if not job.future.done():
                    job.future.set_exception(error)
        for job in self._backlog:  # closed with work queued: none of it will run
            if job is not None:
                job.future.cancel()

    def _batch_mates(self, first: _Generate | _Stream) -> list:
        """Waiting jobs of the same kind and decoding settings as `first`, up to max_batch requests.
        Seeds may differ: HFModel seeds each request's sampling from its own config."""
        while True:
            try:
                self._backlog.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        key, size, mates = _batch_key(first), _size(first), []
        for job in list(self._backlog):
            if isinstance(job, (_Generate, _Stream)) and _batch_key(job) == key and size + _size(job) <= self.max_batch:
                self._backlog.remove(job)
                if job.future.set_running_or_notify_cancel():
                    mates.append(job)
                    size += _size(job)
        return mates

    def _generate(self, jobs: list[_Generate]) -> None:
        requests = [r for job in jobs for r in job.requests]
        results: list[Completion | None] = [None] * len(requests)
        try:
            for i, completion in self.model.generate(requests, progress=False):
                results[i] = completion
        except BaseException as error:
            for job in jobs:
                job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.requests)])
            start += len(job.requests)

    def _streams(self, jobs: list[_Stream]) -> None:
        """Streams decoded as one batch by HFModel's decoding loop (the one its generate() and stream()
        share): each row's text is sent as it grows, held back where a stop sequence or a multi-byte
        character may still be unfinished, exactly as HFModel.stream sends it."""
        requests = [job.request for job in jobs]
        encoded = [self.model._encode(r.prompt) for r in requests]
        stops = [s for s in requests[0].config.stop if s]
        sent = [""] * len(jobs)
        steps = self.model._decode(requests, encoded)
        try:
            for index, tokens, completion in steps:
                job = jobs[index]
                if job.future.done():
                    continue
                if completion is not None:
                    if completion.text.startswith(sent[index]) and len(completion.text) > len(sent[index]):
                        job.emit(completion.text[len(sent[index]):])
                    job.future.set_result(completion)
                elif job.cancelled.is_set():  # its row decodes on with the others, unseen
                    job.future.set_result(None)
                    if all(j.future.done() for j in jobs):
                        return
                else:
                    text = self.model.tokenizer.decode(tokens, skip_special_tokens=False)
                    ready = text[:len(text) - unsettled_tail(text, stops)]
                    if len(ready) > len(sent[index]) and ready.startswith(sent[index]):
                        job.emit(ready[len(sent[index]):])
                        sent[index] = ready
        except BaseException as error:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
        finally:
            steps.close()


def _batch_key(job: _Generate | _Stream) -> tuple:
    request = job.request if isinstance(job, _Stream) else job.requests[0]
    return type(job), replace(request.config, seed=0)


def _size(job: _Generate | _Stream) -> int:
    return 1 if isinstance(job, _Stream) else len(job.requests)
