"""Scale out: `phi-eval run` under `accelerate launch` with 2 CPU processes writes what 1 process writes."""
import json
import multiprocessing
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phi_eval.cache import Cache
from phi_eval.cli import main
from phi_eval.tasks import TASKS

ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_replay(path: Path) -> Path:
    """Three samples for even items, two for odd ones: a shard holding only even items must still take two."""
    docs = TASKS["humaneval"].load_docs(None)[:5]
    with open(path, "w") as f:
        for i, doc in enumerate(docs):
            texts = [doc["canonical_solution"], "    return None\n", "    pass\n"][: 2 + (i % 2 == 0)]
            if i % 2:
                texts.reverse()
            for text in texts:
                f.write(json.dumps({"task_id": doc["doc_id"], "completion": text}) + "\n")
    return path


def run_args(models: str, out: Path) -> list[str]:
    # Sampled (temperature 0.8), so the hf: outputs depend on each request's own seed, not on its batch.
    return ["run", "--models", models, "--tasks", "humaneval", "--limit", "5", "--max-new-tokens", "24",
            "--temperature", "0.8", "--device", "cpu", "--workers", "2", "--out", str(out)]


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "duration_s"}  # the sandbox's timing of each program


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed next to this python")
def test_two_processes_write_what_one_writes(tiny_phi_dir, tmp_path, monkeypatch, capsys):
    models = f"replay:{write_replay(tmp_path / 'replay.jsonl')},hf:{tiny_phi_dir}"

    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home-1"))
    assert main(run_args(models, tmp_path / "one")) == 0, capsys.readouterr().err

    # A fresh home: both ranks generate and commit to one new SQLite cache at the same time.
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home-2"))
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              "-m", "phi_eval.cli", *run_args(models, tmp_path / "two")]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results.json") == 2  # one line per model, from the main process only

    one_dirs = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one_dirs == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(one_dirs) == 2
    for name in one_dirs:
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
        samples_one = [json.loads(line) for line in (one / "samples_humaneval.jsonl").open()]
        samples_two = [json.loads(line) for line in (two / "samples_humaneval.jsonl").open()]
        assert [comparable(r) for r in samples_two] == [comparable(r) for r in samples_one]
        results_one, results_two = (json.loads((d / "results.json").read_text()) for d in (one, two))
        for key in ("results", "n-samples", "configs", "higher_is_better"):
            assert results_two[key] == results_one[key], key
        assert results_one["reproducibility"]["processes"] == 1
        assert results_two["reproducibility"]["processes"] == 2
    replay = next(d for d in (tmp_path / "two").iterdir() if d.name.startswith("replay"))
    assert len((replay / "samples_humaneval.jsonl").read_text().splitlines()) == 10  # 2 or 3 each, pinned to 2


def write_entries(path: str, writer: int, count: int) -> None:
    cache = Cache(path)
    for i in range(count):
        cache.put("generation", f"{writer}-{i}", {"text": f"completion {i} of writer {writer}"})
    cache.close()


def test_processes_commit_to_one_cache_at_the_same_time(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    Cache(path).close()  # created and switched to WAL first, as the main process does
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=write_entries, args=(path, w, 150)) for w in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    keys = [f"{w}-{i}" for w in range(3) for i in range(150)]
    stored = Cache(path).get_many("generation", keys)
    assert len(stored) == len(keys)
    assert stored["2-149"] == {"text": "completion 149 of writer 2"}

