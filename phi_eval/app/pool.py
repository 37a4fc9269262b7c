"""Models shared by every session of the app: loaded lazily, one copy each, a bounded number at a time.

The first request for a model loads it; later requests, from any browser tab, get the same object.
At most `capacity` models are held. When another one is needed, the least recently used model that
nobody is generating with is dropped; if every held model is busy, the request waits its turn.
Generation is capped at `max_streams` completions at once, so twenty users do not mean twenty
decoding loops (and KV caches) competing for memory and cores.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

from phi_eval.errors import UsageError
from phi_eval.zoo import ModelSpec, parse_model_spec

WAIT_POLL_S = 0.1  # how often a waiting request checks whether its user gave up


def load_for_app(spec: ModelSpec):
    from phi_eval.models import load_model

    if spec.kind == "replay":
        raise UsageError(f"{spec.spec}: replay: files only hold completions of benchmark items and cannot "
                         "complete a new prompt; pick a zoo model, an hf: or gguf: model")
    return load_model(spec, device="auto", dtype="auto", batch_size=1)


class ModelPool:
    def __init__(self, capacity: int = 4, max_streams: int = 4,
                 loader: Callable[[ModelSpec], object] = load_for_app):
        if capacity < 1 or max_streams < 1:
            raise UsageError("the app needs room for at least one model and one stream")
        self.capacity = capacity
        self.max_streams = max_streams
        self._loader = loader
        self._lock = threading.Condition()
        self._models: OrderedDict[tuple, object] = OrderedDict()  # least recently used first
        self._users: dict[tuple, int] = {}
        self._loading: set[tuple] = set()
        self._streams = 0
        # One load at a time: loading is the memory peak, and transformers' lazy imports are not thread-safe.
        self._load_lock = threading.Lock()
        self.loads = 0  # how many times a model was loaded (tests check sharing with it)

    @staticmethod
    def resolve(spec: str) -> ModelSpec:
        """Parse a spec as the CLI does; a bad one raises UsageError with the fix."""
        if not spec or not spec.strip():
            raise UsageError("no model chosen: pick a zoo model or type hf:DIR, gguf:FILE or openai:MODEL@URL")
        return parse_model_spec(spec)

    def loaded(self) -> list[str]:
        with self._lock:
            return [model.identity["name"] for model in self._models.values()]

    @contextmanager
    def stream_slot(self, cancelled: threading.Event) -> Iterator[bool]:
        """Wait for one of the `max_streams` generation slots; yields False if the user stopped first."""
        with self._lock:
            while self._streams >= self.max_streams and not cancelled.is_set():
                self._lock.wait(WAIT_POLL_S)
            if cancelled.is_set():
                got = False
            else:
                self._streams += 1
                got = True
        try:
            yield got
        finally:
            if got:
                with self._lock:
                    self._streams -= 1
                    self._lock.notify_all()

    @contextmanager
    def use(self, spec: ModelSpec) -> Iterator[object]:
        """The shared model for `spec`, loaded on first use; it is not dropped while in use."""
        key = (spec.kind, spec.target, spec.base_url)  # two specs naming one checkpoint share it
        model = self._acquire(key, spec)
        try:
            yield model
        finally:
            with self._lock:
                self._users[key] -= 1
                self._lock.notify_all()

    def _acquire(self, key: tuple, spec: ModelSpec):
        with self._lock:
            while True:
                if key in self._models:
                    self._models.move_to_end(key)
                    self._users[key] = self._users.get(key, 0) + 1
                    return self._models[key]
                if key not in self._loading and len(self._models) + len(self._loading) < self.capacity:
                    self._loading.add(key)
                    break
                idle = next((k for k in self._models if not self._users.get(k)), None)
                if idle is not None and key not in self._loading:
                    del self._models[idle], self._users[idle]  # memory goes back with the last reference
                    continue
                self._lock.wait()
        try:
            with self._load_lock:
                model = self._loader(spec)
        except BaseException:
            with self._lock:
                self._loading.discard(key)
                self._lock.notify_all()
            raise
        with self._lock:
            self._loading.discard(key)
            self._models[key] = model
            self._users[key] = self._users.get(key, 0) + 1
            self.loads += 1
            self._lock.notify_all()
        return model
