"""Training resumes after `kill -9`: a run killed after a checkpoint, rerun, ends with the same
weights and the same logged losses as a run that was never interrupted."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors.torch import load_file

from phi_eval.errors import UsageError
from phi_eval.paths import PROJECT_ROOT
from phi_eval.train import load_recipe, train
from test_train import TINY_MODEL, write_code_corpus

TIMING_FIELDS = ("tokens_per_s", "mfu")


@pytest.fixture
def resumable_recipe(tmp_path, phi_home):
    corpus = write_code_corpus(tmp_path / "src")
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump({
        "name": "resume",
        "model": {**TINY_MODEL, "dropout": 0.1},  # dropout draws from the RNG the checkpoint restores
        "tokenizer": {"train": {"vocab_size": 400}},
        "data": {"source": [str(corpus)], "val_fraction": 0.2},
        "training": {"seq_len": 64, "batch_size": 8, "micro_batch_size": 4, "max_steps": 120, "lr": 1e-2,
                     "warmup_steps": 3, "eval_every": 50, "eval_batches": 2, "log_every": 7,
                     "checkpoint_every": 20, "threads": 1},
    }))
    return path


def losses(out):
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def test_killed_run_resumes_to_the_same_weights(resumable_recipe, tmp_path, phi_home):
    recipe = load_recipe(resumable_recipe)
    reference = train(recipe, out_dir=tmp_path / "reference", progress=False, register=False)

    killed = tmp_path / "killed"
    env = {**os.environ, "PHI_EVAL_HOME": str(phi_home)}
    process = subprocess.Popen([sys.executable, "-m", "phi_eval.cli", "train", str(resumable_recipe), "--out",
                                str(killed)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in (killed / "checkpoints").glob("step-*") if p.suffix != ".partial"]
        if done:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed after a checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "training_summary.json").exists()
    killed_at = int(done[0].name.removeprefix("step-"))
    assert 0 < killed_at < 120

    resumed = train(recipe, out_dir=killed, progress=False, register=False)
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["steps"] == 120
    resumed_from = summary["resumed_from_steps"]
    assert len(resumed_from) == 1 and resumed_from[0] >= killed_at and resumed_from[0] % 20 == 0

    # Bit for bit: the same weights and the same losses at every logged step.
    expected, got = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all((expected[k] == got[k]).all() for k in expected)
    assert losses(resumed) == losses(reference)
    assert summary["val_loss_last"] == json.loads((reference / "training_summary.json").read_text())["val_loss_last"]


def test_resuming_with_another_recipe_is_refused(resumable_recipe, tmp_path):
    out = tmp_path / "out"
    train(load_recipe(resumable_recipe, ["training.max_steps=20"]), out_dir=out, progress=False, register=False)
    with pytest.raises(UsageError, match=r"checkpoint of another recipe \(training.lr differ\); pass --restart"):
        train(load_recipe(resumable_recipe, ["training.max_steps=20", "training.lr=0.5"]), out_dir=out,
              progress=False, register=False)
    # --restart starts over; checkpoint_every and evaluate may change freely.
    train(load_recipe(resumable_recipe, ["training.max_steps=20", "training.lr=0.5"]), out_dir=out,
          progress=False, restart=True, register=False)
    again = train(load_recipe(resumable_recipe, ["training.max_steps=20", "training.lr=0.5",
                                                 "training.checkpoint_every=5"]),
                  out_dir=out, progress=False, register=False)
    assert json.loads((again / "training_summary.json").read_text())["resumed_from_steps"] == [20]
