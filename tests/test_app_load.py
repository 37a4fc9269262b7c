"""Load: 20 browser sessions (gradio clients) ask the running app for a side-by-side comparison at once.
All are answered without errors, each model is loaded once, no more completions run at a time than the
pool allows, and the process's memory stays bounded."""
import threading
import time

import psutil
from gradio_client import Client

from app_support import compare_args, launched
from phi_eval.app.pool import ModelPool, load_for_app
from phi_eval.app.presets import PRESETS

SESSIONS = 20
MAX_STREAMS = 4
MAX_TOKENS = 32
PROMPT = PRESETS["Self-awareness (the talk)"].prompt  # both tiny models run to max tokens on it
MEMORY_GROWTH_LIMIT = 300 * 2**20  # the sessions' own state is small; two tiny models are already loaded


class CountingModel:
    """Passes generation through to a real model and counts how many of its streams run at once."""

    def __init__(self, model, counter):
        self.model, self.counter = model, counter
        self.identity = model.identity

    def stream(self, request):
        with self.counter["lock"]:
            self.counter["now"] += 1
            self.counter["peak"] = max(self.counter["peak"], self.counter["now"])
        try:
            return (yield from self.model.stream(request))
        finally:
            with self.counter["lock"]:
                self.counter["now"] -= 1


def test_twenty_concurrent_sessions_are_all_answered_within_bounds(tiny_phi_dir, tmp_path):
    from phi_eval.app import page as app
    from tiny import make_tiny_phi

    counter = {"lock": threading.Lock(), "now": 0, "peak": 0}
    pool = ModelPool(max_streams=MAX_STREAMS, loader=lambda spec: CountingModel(load_for_app(spec), counter))
    specs = [f"hf:{tiny_phi_dir}", f"hf:{make_tiny_phi(tmp_path / 'second', seed=1)}"]
    process = psutil.Process()
    with launched(app.build(specs, pool=pool)) as url:
        warm = Client(url, verbose=False).predict(*compare_args(specs, PROMPT, MAX_TOKENS),
                                                  api_name="/compare")[-1]
        baseline, peak_rss = process.memory_info().rss, [0]
        clients = [Client(url, verbose=False) for _ in range(SESSIONS)]
        answers, errors = [None] * SESSIONS, []
        sampling = threading.Event()

        def sample_memory():
            while not sampling.is_set():
                peak_rss[0] = max(peak_rss[0], process.memory_info().rss)
                time.sleep(0.05)

        def session(i):
            try:
                answers[i] = clients[i].predict(*compare_args(specs, PROMPT, MAX_TOKENS),
                                                api_name="/compare")[-1]
            except Exception as e:  # collected: every failure is reported, not just the first
                errors.append(repr(e))

        sampler = threading.Thread(target=sample_memory)
        threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
        sampler.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        sampling.set()
        sampler.join()

    assert not errors and all(answers)
    expected = [side["completion"] for side in warm["sides"]]
    for record in answers:
        assert [s["status"] for s in record["sides"]] == ["done", "done"]
        assert [s["completion"] for s in record["sides"]] == expected  # greedy: every session gets the same
        assert [s["metrics"]["output_tokens"] for s in record["sides"]] == [MAX_TOKENS, MAX_TOKENS]
    assert pool.loads == 2  # one copy of each model, however many sessions
    assert counter["peak"] <= MAX_STREAMS
    assert peak_rss[0] - baseline < MEMORY_GROWTH_LIMIT
