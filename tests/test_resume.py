"""kill -9 in the middle of a run, then the same command: it resumes and ends exactly where an
uninterrupted run ends, with nothing lost and nothing counted twice."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time


def phi_eval(args, home, **kwargs):
    env = {**os.environ, "PHI_EVAL_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "phi_eval.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def cached_generations(home) -> int:
    try:
        with sqlite3.connect(home / "cache.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM entries WHERE namespace = 'generation'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tiny_phi_dir, tmp_path):
    limit = 24
    args = ["run", "--models", f"hf:{tiny_phi_dir}", "--tasks", "humaneval", "--limit", str(limit),
            "--max-new-tokens", "96", "--batch-size", "1", "--device", "cpu", "--workers", "2"]
    home = tmp_path / "home"

    victim = phi_eval([*args, "--out", str(tmp_path / "killed")], home)
    deadline = time.time() + 120
    while cached_generations(home) < 4 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = cached_generations(home)
    assert 4 <= done_before < limit, "the run must be killed in the middle"

    resumed = phi_eval([*args, "--out", str(tmp_path / "killed")], home)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{done_before} of {limit} completions from the cache" in out + err
    assert cached_generations(home) == limit

    fresh = phi_eval([*args, "--out", str(tmp_path / "fresh"), "--no-cache"], tmp_path / "other-home")
    _, err = fresh.communicate(timeout=300)
    assert fresh.returncode == 0, err

    def samples(run):
        path = next((tmp_path / run).glob("*/samples_humaneval.jsonl"))
        return [{k: v for k, v in json.loads(line).items() if k != "duration_s"} for line in path.open()]

    def scores(run):
        return json.loads(next((tmp_path / run).glob("*/results.json")).read_text())["results"]

    assert samples("killed") == samples("fresh")
    assert len(samples("killed")) == limit
    assert scores("killed") == scores("fresh")
