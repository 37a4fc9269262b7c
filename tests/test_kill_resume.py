"""kill -9 in the middle of every kind of run, then the same command again: the rerun reuses the work the
killed run finished (read back from the cache, not recomputed) and ends with exactly the results of an
uninterrupted run: generation (hf:), the sandbox's verdicts, multiple choice (PIQA), ToxiGen (rolling
log-likelihoods), openai: requests through `phi-eval serve`, and a data stage (synthesize) served the same way.

The killed run is a subprocess; it is killed once the SQLite file holds at least one committed chunk (polled,
not slept for). The rerun and the uninterrupted run are in process, one torch thread like the killed run, so
that all three compute the same floats.
"""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi_eval.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
needs_shared = pytest.mark.skipif(not (SHARED / "piqa").is_dir() or not (SHARED / "toxigen").is_dir(),
                                  reason="needs ../shared/benchmarks")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def start(args: list[str], home: Path, **env) -> subprocess.Popen:
    env = {**os.environ, "PHI_EVAL_HOME": str(home), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "phi_eval.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def count_rows(database: Path, query: str) -> int:
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def kill_when(process: subprocess.Popen, database: Path, query: str, at_least: int, timeout_s: float = 180) -> int:
    """kill -9 `process` once `query` counts at least `at_least` rows; the count committed at that moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if count_rows(database, query) >= at_least:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -9, "the run ended before it could be killed: " + process.stderr.read()[-2000:]
    return count_rows(database, query)


def in_process(argv: list[str], home: Path, monkeypatch, capsys) -> str:
    monkeypatch.setenv("PHI_EVAL_HOME", str(home))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def outputs(out: Path, task: str) -> tuple[dict, list[dict]]:
    model_dir = next(out.iterdir())
    results = json.loads((model_dir / "results.json").read_text())["results"]
    samples = [{k: v for k, v in json.loads(line).items() if k != "duration_s"}
               for line in (model_dir / f"samples_{task}.jsonl").open()]
    return results, samples


def count_scored(monkeypatch, method: str) -> list[int]:
    """Requests that reach HFModel.<method> from now on (one entry per call; generate() is a generator)."""
    from phi_eval.models.hf import HFModel

    calls: list[int] = []
    original = getattr(HFModel, method)

    def counted(self, requests, progress=True):
        calls.append(len(requests))
        return original(self, requests, progress=progress)

    monkeypatch.setattr(HFModel, method, counted)
    return calls


LOGLIKELIHOODS = "SELECT COUNT(*) FROM entries WHERE namespace = 'loglikelihood'"
GENERATIONS = "SELECT COUNT(*) FROM entries WHERE namespace = 'generation'"
VERDICTS = "SELECT COUNT(*) FROM entries WHERE namespace = 'execution'"


def test_generation_run_killed_resumes_with_identical_results(tiny_phi_dir, tmp_path, monkeypatch, capsys):
    limit = 12
    args = ["run", "--models", f"hf:{tiny_phi_dir}", "--tasks", "humaneval", "--limit", str(limit),
            "--max-new-tokens", "64", "--batch-size", "1", "--device", "cpu", "--workers", "1"]
    home = tmp_path / "home"
    victim = start([*args, "--out", str(tmp_path / "killed")], home)
    done = kill_when(victim, home / "cache.sqlite", GENERATIONS, 3)
    assert 3 <= done < limit

    calls = count_scored(monkeypatch, "generate")
    err = in_process([*args, "--out", str(tmp_path / "killed")], home, monkeypatch, capsys)
    assert f"resuming: {done} of {limit} completions from the cache" in err
    assert sum(calls) == limit - done

    in_process([*args, "--out", str(tmp_path / "fresh"), "--no-cache"], tmp_path / "other", monkeypatch, capsys)
    assert outputs(tmp_path / "killed", "humaneval") == outputs(tmp_path / "fresh", "humaneval")


def test_execution_killed_resumes_from_the_verdicts_committed(tmp_path, monkeypatch, capsys):
    """Verdicts are committed one by one as programs end: a run killed while the sandbox works keeps them."""
    from phi_eval.tasks import TASKS

    limit = 8
    replay = tmp_path / "slow.jsonl"
    with open(replay, "w") as f:
        for doc in TASKS["humaneval"].load_docs(None)[:limit]:
            completion = "    import time; time.sleep(0.4)\n" + doc["canonical_solution"]
            f.write(json.dumps({"task_id": doc["doc_id"], "completion": completion}) + "\n")
    args = ["run", "--models", f"replay:{replay}", "--tasks", "humaneval", "--limit", str(limit), "--workers", "1"]
    home = tmp_path / "home"
    victim = start([*args, "--out", str(tmp_path / "killed")], home)
    done = kill_when(victim, home / "cache.sqlite", VERDICTS, 2)
    assert 2 <= done < limit

    err = in_process([*args, "--out", str(tmp_path / "killed")], home, monkeypatch, capsys)
    assert f"resuming: {done} of {limit} verdicts from the cache" in err
    results, samples = outputs(tmp_path / "killed", "humaneval")
    assert results["humaneval"]["pass@1,none"] == 1.0 and len(samples) == limit


@needs_shared
@pytest.mark.parametrize("task, limit, method", [
    ("piqa", 300, "loglikelihood"),  # two choices per item: 600 requests, chunks of 256, 256, 88
    ("toxigen", 113, "loglikelihood_rolling"),  # every statement of the shared files: 522 texts
])
def test_log_likelihood_run_killed_resumes_with_identical_results(task, limit, method, tiny_phi_dir,
                                                                    tmp_path, monkeypatch, capsys):
    args = ["run", "--models", f"hf:{tiny_phi_dir}", "--tasks", task, "--data-dir", str(SHARED), "--limit",
            str(limit), "--device", "cpu", "--batch-size", "1"]
    home = tmp_path / "home"
    victim = start([*args, "--out", str(tmp_path / "killed")], home)
    done = kill_when(victim, home / "cache.sqlite", LOGLIKELIHOODS, 256)
    assert done in (256, 512), "whole chunks are committed"

    calls = count_scored(monkeypatch, method)
    err = in_process([*args, "--out", str(tmp_path / "killed")], home, monkeypatch, capsys)
    resuming = re.search(rf"resuming: {done} of (\d+) {method} requests already scored", err)
    assert resuming, err
    requests = int(resuming.group(1))
    assert requests > 512  # so that the run was killed before its last chunk
    assert sum(calls) == requests - done, "the rerun scores only what the killed run had not finished"
    assert count_rows(home / "cache.sqlite", LOGLIKELIHOODS) == requests

    in_process([*args, "--out", str(tmp_path / "fresh"), "--no-cache"], tmp_path / "other", monkeypatch, capsys)
    assert outputs(tmp_path / "killed", task) == outputs(tmp_path / "fresh", task)


@pytest.fixture
def served(tiny_phi_dir):
    """`phi-eval serve` over the tiny model in this process, counting the generation requests it answers."""
    from phi_eval.models.hf import HFModel
    from phi_eval.serve import start_server

    model = HFModel(str(tiny_phi_dir), name="tiny", device="cpu")
    answered = []
    decode = model._decode  # the decoding loop under generate() and streams alike

    def counted(requests, *args, **kwargs):
        answered.append(len(requests))
        return decode(requests, *args, **kwargs)

    model._decode = counted
    with start_server(model, name="tiny") as server:
        server.answered = answered
        yield server


def test_openai_run_killed_resumes_with_identical_results(served, tmp_path, monkeypatch, capsys):
    limit = 12
    args = ["run", "--models", f"openai:tiny@{served.base_url}", "--tasks", "humaneval", "--limit", str(limit),
            "--max-new-tokens", "48", "--workers", "1"]
    home = tmp_path / "home"
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    victim = start([*args, "--out", str(tmp_path / "killed")], home, PHI_EVAL_OPENAI_CONCURRENCY="1")
    done = kill_when(victim, home / "cache.sqlite", GENERATIONS, 3)
    assert 3 <= done < limit

    before = sum(served.answered)
    monkeypatch.setenv("PHI_EVAL_OPENAI_CONCURRENCY", "1")
    err = in_process([*args, "--out", str(tmp_path / "killed")], home, monkeypatch, capsys)
    assert f"resuming: {done} of {limit} completions from the cache" in err
    # The server may still answer the one request the killed client had in flight (concurrency 1).
    assert limit - done <= sum(served.answered) - before <= limit - done + 1

    in_process([*args, "--out", str(tmp_path / "fresh"), "--no-cache"], tmp_path / "other", monkeypatch, capsys)
    assert outputs(tmp_path / "killed", "humaneval") == outputs(tmp_path / "fresh", "humaneval")


def test_synthesize_stage_killed_resumes_with_identical_output(served, tmp_path, monkeypatch, capsys):
    count = 12
    out = tmp_path / "book.jsonl"
    args = ["data", "synthesize", "--kind", "textbook", "--count", str(count), "--max-tokens", "32",
            "--model", "tiny", "--base-url", served.base_url, "--concurrency", "1", "--quiet"]
    home = tmp_path / "home"
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    victim = start([*args, "--out", str(out)], home, OPENAI_API_KEY="unused")
    progress = out.with_name(out.name + ".progress.sqlite")
    done = kill_when(victim, progress, "SELECT COUNT(*) FROM done", 3)
    assert 3 <= done < count and not out.exists()

    before = sum(served.answered)
    in_process([*args, "--out", str(out)], home, monkeypatch, capsys)
    # Finished sections are not requested again; the one the killed client had in flight may still be answered.
    assert count - done <= sum(served.answered) - before <= count - done + 1
    assert json.loads(out.with_suffix(".manifest.json").read_text())["resumed_units"] == done

    fresh = tmp_path / "fresh.jsonl"
    in_process([*args, "--out", str(fresh), "--no-cache"], tmp_path / "other", monkeypatch, capsys)
    assert out.read_text() == fresh.read_text()
