"""Models shared by every session of the app: loaded lazily (or preloaded), one copy each, a bounded number at a time.

The first request for a model loads it; later requests, from any browser tab, get the same object.
Loads run in parallel while the machine's free memory covers them all (a load's peak is estimated from
its weights); otherwise a load waits for the running ones. At most `capacity` models are held, and only a
successful load takes a place: once it has succeeded, the least recently used model that nobody is
generating with is dropped, so a failed load never costs a loaded model. openai: models hold no weights
and take no place. Generation is capped at `max_streams` completions at once, so twenty users do not
mean twenty decoding loops (and KV caches) competing for memory and cores.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import psutil

from phi_eval.errors import UsageError
from phi_eval.zoo import ModelSpec, parse_model_spec

WAIT_POLL_S = 0.1  # how often a waiting request checks whether its user gave up
MEMORY_HEADROOM = 0.8  # parallel loads may plan on this share of the memory that is free now
FLOAT32_BYTES = 4
LOAD_PEAK = 2  # a checkpoint's bytes are held twice while loading (file or quantized copy + float weights)
PROBE_TIMEOUT_S = 3.0
log = logging.getLogger(__name__)


def load_for_app(spec: ModelSpec):
    from phi_eval.models import load_model

    if spec.kind == "replay":
        raise UsageError(f"{spec.spec}: replay: files only hold completions of benchmark items and cannot "
                         "complete a new prompt; pick a zoo model, an hf: or gguf: model")
    if spec.kind == "hf" and Path(spec.target).is_dir() and not (Path(spec.target) / "config.json").is_file():
        raise UsageError(f"no config.json in {spec.target}: it is not a transformers model directory; "
                         "give the directory a model was saved to, or gguf:FILE")
    if spec.kind == "openai" and spec.base_url:
        probe_endpoint(spec.base_url)
    return load_model(spec, device="auto", dtype="auto", batch_size=1)


def probe_endpoint(base_url: str) -> None:
    """Fail at once, with the fix, when nothing answers at an openai: base URL (any HTTP answer will do)."""
    try:
        urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # a server answered (an API key may be missing; the first request says so)
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(f"cannot reach the openai: endpoint {base_url} ({reason}); start the server "
                         "(e.g. `phi-eval serve MODEL`) or fix the URL") from None


def load_bytes(spec: ModelSpec) -> float:
    """Estimated peak memory of loading `spec` as float32; infinity when unknown (such a load runs alone)."""
    if spec.kind == "openai":
        return 0.0
    parameters = spec.card.parameters if spec.card else None
    if parameters:
        return parameters * FLOAT32_BYTES * LOAD_PEAK
    target = Path(spec.target)
    if spec.kind == "gguf" and target.is_file():
        return target.stat().st_size * 8 * LOAD_PEAK  # ~4-bit weights become 32-bit floats
    if target.is_dir():
        weights = [p for p in target.iterdir() if p.suffix in (".safetensors", ".bin")]
        if weights:
            return sum(p.stat().st_size for p in weights) * LOAD_PEAK * 2  # bf16 files become float32
    return float("inf")


def model_key(spec: ModelSpec) -> tuple:
    return (spec.kind, spec.target, spec.base_url)  # two specs naming one checkpoint share it


class ModelPool:
    def __init__(self, capacity: int = 4, max_streams: int = 4,
                 loader: Callable[[ModelSpec], object] = load_for_app,
                 free_memory: Callable[[], float] = lambda: psutil.virtual_memory().available):
        if capacity < 1 or max_streams < 1:
            raise UsageError("the app needs room for at least one model and one stream")
        self.capacity = capacity
        self.max_streams = max_streams
        self._loader = loader
        self._free_memory = free_memory
        self._lock = threading.Condition()
        self._models: OrderedDict[tuple, object] = OrderedDict()  # least recently used first
        self._users: dict[tuple, int] = {}
        self._loading: dict[tuple, float] = {}  # key -> bytes the running load planned on
        self._stages: dict[tuple, tuple[str, float]] = {}  # key -> (stage, since) of loads waiting or running
        self._streams = 0
        self.loads = 0  # how many times a model was loaded (tests check sharing with it)
        self.peak_parallel_loads = 0

    @staticmethod
    def resolve(spec: str) -> ModelSpec:
        """Parse a spec as the CLI does; a bad one raises UsageError with the fix."""
        if not spec or not spec.strip():
            raise UsageError("no model chosen: pick a zoo model or type hf:DIR, gguf:FILE or openai:MODEL@URL")
        return parse_model_spec(spec)

    def loaded(self) -> list[str]:
        with self._lock:
            return [model.identity["name"] for model in self._models.values()]

    def is_loaded(self, spec: ModelSpec) -> bool:
        with self._lock:
            return model_key(spec) in self._models

    def stage(self, spec: ModelSpec) -> tuple[str, float] | None:
        """(what the model's load is doing, since when) while it waits or loads; None once loaded."""
        with self._lock:
            return self._stages.get(model_key(spec))

    def preload(self, specs) -> list[threading.Thread]:
        """Load `specs` in the background (in parallel where memory allows); failures are logged in one line."""
        def load(text: str) -> None:
            try:
                with self.use(self.resolve(text)):
                    pass
                log.info("preloaded %s", text)
            except UsageError as e:
                log.warning("not preloaded: %s", e)
            except Exception:
                log.exception("preloading %s failed", text)

        threads = [threading.Thread(target=load, args=(s,), name=f"preload-{s}", daemon=True) for s in specs if s]
        for thread in threads:
            thread.start()
        return threads

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
        key = model_key(spec)
        model = self._acquire(key, spec)
        try:
            yield model
        finally:
            with self._lock:
                self._users[key] -= 1
                self._trim()
                self._lock.notify_all()

    # -- internals (callers hold self._lock where noted) ------------------------------------------------

    def _held(self) -> list[tuple]:
        return [k for k in self._models if k[0] != "openai"]

    def _trim(self) -> None:
        """(lock held) Drop least recently used idle models while more than `capacity` are held."""
        for key in list(self._held()):
            if len(self._held()) <= self.capacity:
                return
            if not self._users.get(key):
                del self._models[key], self._users[key]  # memory goes back with the last reference

    def _may_load(self, key: tuple, need: float) -> str | None:
        """(lock held) None if the load of `key` may start now, else what it waits for."""
        if key[0] != "openai":
            held, busy = self._held(), [k for k in self._held() if self._users.get(k)]
            if len(busy) >= self.capacity:
                return f"waiting: all {len(held)} model places are in use by running completions"
        others = [k for k in self._loading if k[0] != "openai"]
        if need and others and sum(self._loading[k] for k in others) + need > MEMORY_HEADROOM * self._free_memory():
            return f"waiting for memory: {len(others)} other model load(s) running"
        return None

    def _acquire(self, key: tuple, spec: ModelSpec):
        need = load_bytes(spec)
        with self._lock:
            while True:
                if key in self._models:
                    self._models.move_to_end(key)
                    self._users[key] = self._users.get(key, 0) + 1
                    return self._models[key]
                if key not in self._loading:
                    waiting = self._may_load(key, need)
                    if waiting is None:
                        self._loading[key] = need
                        self._stages[key] = ("loading the weights", time.time())
                        self.peak_parallel_loads = max(self.peak_parallel_loads, len(self._loading))
                        break
                    if self._stages.get(key, ("",))[0] != waiting:
                        self._stages[key] = (waiting, time.time())
                self._lock.wait(WAIT_POLL_S)
        try:
            model = self._loader(spec)
        except BaseException:
            with self._lock:
                del self._loading[key], self._stages[key]
                self._lock.notify_all()
            raise
        with self._lock:
            del self._loading[key], self._stages[key]
            self._models[key] = model
            self._users[key] = self._users.get(key, 0) + 1
            self.loads += 1
            self._trim()
            self._lock.notify_all()
        return model
