"""Bad input, as a hostile but ordinary user gives it, to every subcommand: exit 2, exactly one line on
stderr that names the fix, no traceback; and a rerun after the fix reuses what was computed.

Cases run in process through `phi_eval.cli.main`; `{tmp}` in an argument is the test's directory, where
the `bad_files` fixture has written the broken files the cases name.
"""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phi_eval.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
PROGRESS = re.compile(r"\[\d+:\d+(<|, )")  # tqdm's "[00:01<00:02, ..." / "[00:00, 3.2doc/s]"
NOT_UTF8 = b"\xff\xfe not utf-8 \xc3\x28"
HUMANEVAL = ["run", "--models", "replay:{tmp}/one.jsonl", "--tasks", "humaneval", "--out", "{tmp}/out"]
HF = ["run", "--models", "hf:{tmp}/no-model", "--tasks", "humaneval", "--out", "{tmp}/out"]


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "one.jsonl").write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"}) + "\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"task_id": "HumanEval/0", "completion": "ok"}\n' + NOT_UTF8 + b"\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a-file").write_text("I am a file")
    (tmp_path / "no-model").mkdir()
    (tmp_path / "no-model" / "README.md").write_text("weights went missing")
    (tmp_path / "mbpp-bad" / "mbpp").mkdir(parents=True)
    (tmp_path / "mbpp-bad" / "mbpp" / "mbpp.jsonl").write_bytes(b'{"task_id": 1}\n' + NOT_UTF8 + b"\n")
    (tmp_path / "piqa-bad" / "piqa").mkdir(parents=True)
    (tmp_path / "piqa-bad" / "piqa" / "valid.jsonl").write_bytes(NOT_UTF8 + b"\n")
    (tmp_path / "piqa-bad" / "piqa" / "valid-labels.lst").write_text("0\n")
    (tmp_path / "recipe-latin1.yaml").write_bytes(b"name: x\n# caf\xe9\n")
    (tmp_path / "recipe-list.yaml").write_text("- just\n- a list\n")
    (tmp_path / "corrupt-run").mkdir()
    (tmp_path / "corrupt-run" / "results.json").write_text("{not json")
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "def f():\n    return 1\n"}) + "\n")
    (tmp_path / "docs-latin1.jsonl").write_bytes(NOT_UTF8 + b"\n")
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "bad.yaml").write_bytes(b"name: bad\nlicense: caf\xe9\n")
    return tmp_path


RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "phi-tiny.yaml")

# (argv, what the one line must contain, extra environment)
CASES = [
    # run: generation options
    (HUMANEVAL + ["--max-new-tokens", "0"], "--max-new-tokens", {}),
    (HUMANEVAL + ["--max-new-tokens", "-5"], "at least 1", {}),
    (HUMANEVAL + ["--temperature", "-1"], "--temperature", {}),
    (HUMANEVAL + ["--temperature", "nan"], "temperature of 0", {}),
    (HUMANEVAL + ["--top-p", "2"], "--top-p", {}),
    (HUMANEVAL + ["--top-p", "0"], "above 0 and at most 1", {}),
    (HUMANEVAL + ["--n-samples", "0"], "--n-samples", {}),
    (HUMANEVAL + ["--seed", "-1"], "--seed", {}),
    (HUMANEVAL + ["--seed", "abc"], "--seed", {}),
    (HUMANEVAL + ["--workers", "0"], "--workers", {}),
    (HUMANEVAL + ["--workers", "100000"], "1 to 1000", {}),
    (HUMANEVAL + ["--timeout", "0"], "--timeout", {}),
    (HUMANEVAL + ["--timeout", "inf"], "seconds above 0", {}),
    (HUMANEVAL + ["--batch-size", "0"], "--batch-size", {}),
    (HUMANEVAL + ["--batch-size", "zero"], "positive integer or auto", {}),
    (HUMANEVAL + ["--device", "tpu9"], "cuda:N", {}),
    (HUMANEVAL + ["--device", "cuda:x"], "--device", {}),
    (HUMANEVAL + ["--dtype", "float8"], "bfloat16", {}),
    (HUMANEVAL + ["--limit", "0"], "--limit", {}),
    (HUMANEVAL + ["--limit", "-2"], "at least 1", {}),
    (HUMANEVAL + ["--num-fewshot", "-1"], "--num-fewshot", {}),
    (HUMANEVAL + ["--limt", "3"], "unrecognized arguments: --limt", {}),
    # run: models and tasks
    (["run", "--models", ",", "--tasks", "humaneval", "--out", "{tmp}/out"], "--models", {}),
    (["run", "--models", "phi-3000", "--tasks", "humaneval"], "zoo list", {}),
    (["run", "--models", "hf:x", "--tasks", "humaneva"], "did you mean", {}),
    (["run", "--models", "hf:x", "--tasks", ","], "--tasks", {}),
    (["run", "--models", "ftp:x", "--tasks", "humaneval"], "hf:", {}),
    (["run", "--models", "hf:", "--tasks", "humaneval"], "hf:microsoft/phi-1", {}),
    (["run", "--models", "phi-tiny", "--tasks", "humaneval", "--out", "{tmp}/out"], "phi-eval train", {}),
    (HF, "no config.json in", {}),
    (["run", "--models", "hf:{tmp}/nowhere/at/all", "--tasks", "humaneval"], "existing directory", {}),
    (["run", "--models", "hf:example-org/not-in-any-cache", "--tasks", "humaneval", "--out", "{tmp}/out"],
     "HF_HUB_OFFLINE=1", {}),
    (["run", "--models", "gguf:{tmp}/missing.gguf", "--tasks", "humaneval"], "missing.gguf", {}),
    # run: files
    (["run", "--models", "replay:/nonexistent.jsonl", "--tasks", "humaneval"], "nonexistent", {}),
    (["run", "--models", "replay:{tmp}/latin1.jsonl", "--tasks", "humaneval", "--out", "{tmp}/out"],
     "latin1.jsonl:2", {}),
    (["run", "--models", "replay:{tmp}/empty.jsonl", "--tasks", "humaneval", "--out", "{tmp}/out"], "no samples", {}),
    (HUMANEVAL, "--limit", {}),  # 1 of 164 problems covered
    (["run", "--models", "replay:{tmp}/one.jsonl", "--tasks", "humaneval", "--n-samples", "2", "--limit", "1",
      "--out", "{tmp}/out"], "--n-samples", {}),
    (["run", "--models", "replay:{tmp}/one.jsonl", "--tasks", "mbpp", "--data-dir", "{tmp}/mbpp-bad",
      "--out", "{tmp}/out"], "mbpp.jsonl:2", {}),
    (["run", "--models", "hf:x", "--tasks", "piqa", "--data-dir", "{tmp}/piqa-bad", "--out", "{tmp}/out"],
     "valid.jsonl:1", {}),
    (["run", "--models", "hf:x", "--tasks", "mbpp", "--data-dir", "/nonexistent"], "--data-dir", {}),
    (["run", "--models", "hf:x", "--tasks", "mbpp", "--data-dir", "{tmp}/a-file"], "--data-dir", {}),
    (HUMANEVAL[:-2] + ["--out", "{tmp}/a-file"], "is a file", {}),
    (HUMANEVAL[:-2] + ["--out", "{tmp}/a-file/below"], "--out", {}),
    (HUMANEVAL[:-2] + ["--out", "/sys"], "not writable", {}),
    (HUMANEVAL, "PHI_EVAL_HOME", {"PHI_EVAL_HOME": "{tmp}/a-file"}),
    (HUMANEVAL, "PHI_EVAL_HOME", {"PHI_EVAL_HOME": "/sys/phi-eval-home"}),
    (HUMANEVAL + ["--limit", "1"], "delete", {"PHI_EVAL_HOME": "{tmp}/corrupt-home"}),
    (HUMANEVAL + ["--contamination", "{tmp}/no-report.json"], "--contamination", {}),
    (HUMANEVAL + ["--limit", "1", "--contamination", "{tmp}/docs.jsonl"], "phi-eval contamination", {}),
    (["run", "--models", "openai:x@notaurl", "--tasks", "humaneval", "--out", "{tmp}/out"], "http://", {}),
    (["run", "--models", "hf:x", "--tasks", "gsm8k", "--data-dir", "{tmp}", "--out", "{tmp}/out"],
     "gsm8k/test.jsonl", {}),
    (["run", "--models", "hf:x", "--tasks", "toxigen_cls", "--data-dir", "{tmp}", "--out", "{tmp}/out"],
     "annotated_test.csv", {}),
    # zoo
    (["zoo", "show", "phi-1.6"], "phi-1.5", {}),
    (["zoo"], "required", {}),
    (["zoo", "list"], "bad.yaml:2", {"PHI_EVAL_ZOO": "{tmp}/zoo"}),
    (["frobnicate"], "invalid choice", {}),
    # leaderboard
    (["leaderboard", "/nonexistent-run", "-o", "{tmp}/lb.json"], "nonexistent-run", {}),
    (["leaderboard", "{tmp}/empty-run", "-o", "{tmp}/lb.json"], "results.json", {}),
    (["leaderboard", "{tmp}/corrupt-run", "-o", "{tmp}/lb.json"], "corrupt-run", {}),
    (["leaderboard", "{tmp}/corrupt-run", "-o", "{tmp}"], "give a file name", {}),
    # train and train --compare
    (["train", "/nonexistent/recipe.yaml"], "recipe", {}),
    (["train", RECIPE, "training.lr=fast"], "training.lr", {}),
    (["train", RECIPE, "--out", "{tmp}/ckpt", "training.nonsense=1"], "training.nonsense", {}),
    (["train", RECIPE, "noequals"], "key=value", {}),
    (["train", "{tmp}/recipe-latin1.yaml"], "recipe-latin1.yaml:2", {}),
    (["train", "{tmp}/recipe-list.yaml"], "recipe-list.yaml", {}),
    (["train", RECIPE, "--out", "{tmp}/a-file"], "is a file", {}),
    (["train", RECIPE, "--compare", "/nonexistent/b.yaml"], "b.yaml", {}),
    (["train", RECIPE, "--compare", RECIPE, "--n-samples", "0"], "--n-samples", {}),
    (["train", RECIPE, "--compare", RECIPE, "--limit", "0"], "--limit", {}),
    # serve and app
    (["serve", "hf:{tmp}/no-model"], "no config.json in", {}),
    (["serve", "hf:x", "--port", "99999"], "0 to 65535", {}),
    (["serve", "hf:x", "--port", "-1"], "--port", {}),
    (["serve", "replay:{tmp}/one.jsonl", "--port", "0"], "local model", {}),
    (["serve", "hf:x", "--device", "tpu9"], "--device", {}),
    (["serve", "gguf:{tmp}/missing.gguf", "--port", "0"], "missing.gguf", {}),
    (["app", "--port", "99999"], "0 to 65535", {}),
    (["app", "--max-models", "0"], "--max-models", {}),
    (["app", "--max-streams", "-1"], "--max-streams", {}),
    # contamination and the index
    (["contamination", "--corpus", "{tmp}/docs.jsonl", "--methods", "magic", "-o", "{tmp}/c.json"], "ngram", {}),
    (["contamination", "--corpus", "/nonexistent-corpus", "-o", "{tmp}/c.json"], "nonexistent-corpus", {}),
    (["contamination", "--corpus", "{tmp}/docs.jsonl", "--n", "0"], "--n", {}),
    (["contamination", "--corpus", "{tmp}/docs.jsonl", "--ast-taus", "x"], "--ast-taus", {}),
    (["contamination", "--corpus", "{tmp}/docs.jsonl", "--mink-k", "2"], "--mink-k", {}),
    (["contamination", "--corpus", "{tmp}/docs.jsonl", "--tasks", "humaneval", "-o", "{tmp}/a-file/c.json"], "-o", {}),
    (["contamination", "--corpus", "{tmp}/docs-latin1.jsonl", "--tasks", "humaneval", "--limit", "1", "-o", "{tmp}/c.json",
      "--index-dir", "{tmp}/index"], "docs-latin1.jsonl:1", {}),
    (["contamination", "--methods", "ngram", "-o", "{tmp}/c.json"], "--corpus", {}),
    (["index", "build", "--corpus", "/nonexistent-corpus", "--out", "{tmp}/ix"], "nonexistent-corpus", {}),
    (["index", "build", "--corpus", "{tmp}/docs.jsonl", "--out", "{tmp}/ix", "--shard", "3/2"], "--shard", {}),
    (["index", "merge", "/nonexistent-shard", "--out", "{tmp}/ix"], "nonexistent-shard", {}),
    (["index", "merge", "{tmp}/empty-run", "--out", "{tmp}/ix"], "phi-eval index build", {}),
    (["contamination", "--index", "/nonexistent-index", "--tasks", "humaneval", "-o", "{tmp}/c.json"],
     "phi-eval index build", {}),
    # data stages
    (["data", "source", "/nonexistent-src", "--out", "{tmp}/s.jsonl"], "nonexistent-src", {}),
    (["data", "source", "{tmp}/docs.jsonl", "--out", "{tmp}/s.jsonl", "--max-docs", "0"], "--max-docs", {}),
    (["data", "annotate", "--out", "{tmp}/a.jsonl"], "--input", {}),
    (["data", "annotate", "--input", "{tmp}/missing.jsonl", "--out", "{tmp}/a.jsonl", "--annotator", "heuristic"],
     "missing.jsonl", {}),
    (["data", "annotate", "--input", "{tmp}/docs-latin1.jsonl", "--out", "{tmp}/a.jsonl", "--annotator",
      "heuristic"], "docs-latin1.jsonl:1", {}),
    (["data", "annotate", "--input", "{tmp}/docs.jsonl", "--out", "{tmp}/a.jsonl"], "model", {}),
    (["data", "filter", "--input", "{tmp}/docs.jsonl", "--out", "{tmp}/f.jsonl", "--keep-fraction", "2"],
     "--keep-fraction", {}),
    (["data", "dedup", "--input", "{tmp}/docs.jsonl", "--out", "{tmp}/d.jsonl", "--threshold", "0"], "threshold", {}),
    (["data", "synthesize", "--out", "{tmp}/y.jsonl", "--model", "m", "--count", "0"], "count", {}),
    (["data", "source", "{tmp}/docs.jsonl", "--out", "{tmp}/a-file/s.jsonl"], "--out", {}),
    (["data", "decontaminate", "--corpus", "/nonexistent-corpus", "--tasks", "humaneval", "--out", "{tmp}/d.jsonl"],
     "nonexistent-corpus", {}),
    (["data", "decontaminate", "--corpus", "{tmp}/docs.jsonl", "--out", "{tmp}/d.jsonl", "--limit", "0"],
     "--limit", {}),
]


def messages(err: str) -> list[str]:
    """stderr's lines but progress bars (an error found while reading a corpus follows the bar's progress)."""
    return [line for line in err.strip().splitlines() if not PROGRESS.search(line)]


def fill(value: str, tmp: Path) -> str:
    return value.replace("{tmp}", str(tmp))


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize("argv, fix, env", CASES, ids=[" ".join(c[0])[:80] for c in CASES])
def test_bad_input_is_one_line_naming_the_fix_and_exit_2(argv, fix, env, bad_files, phi_home, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, fill(value, bad_files))
    if "corrupt-home" in str(env):
        (bad_files / "corrupt-home").mkdir()
        (bad_files / "corrupt-home" / "cache.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    monkeypatch.setattr(sys, "argv", ["phi-eval"])
    code = run_main([fill(a, bad_files) for a in argv])
    _, err = capsys.readouterr()
    lines = messages(err)
    assert code == 2, err
    assert len(lines) == 1, err
    assert fix in lines[0] and "Traceback" not in err


def test_there_are_at_least_sixty_cases_over_every_subcommand():
    assert len(CASES) >= 60
    commands = {argv[0] if argv[0] not in ("data", "index") else " ".join(argv[:2]) for argv, _, _ in CASES}
    assert {"run", "zoo", "leaderboard", "train", "serve", "app", "contamination", "data source", "data annotate",
            "data decontaminate"} <= commands
    assert any("--compare" in argv for argv, _, _ in CASES)


def test_train_overrides_after_options_in_either_order(tmp_path, phi_home, capsys):
    """README's order `train RECIPE --out DIR key=value` and the other one parse alike (checked via a bad value)."""
    for argv in (["train", RECIPE, "--out", str(tmp_path / "a"), "training.lr=fast"],
                 ["train", RECIPE, "training.lr=fast", "--out", str(tmp_path / "a")]):
        assert run_main(argv) == 2
        assert "training.lr" in capsys.readouterr().err


def test_busy_port_is_one_line(phi_home, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for argv in (["serve", "hf:x", "--port", port], ["app", "--port", port]):
            assert run_main(argv) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "another --port" in err


def test_bad_out_is_found_before_the_work_and_a_rerun_reuses_the_cache(tiny_phi_dir, tmp_path, phi_home, capsys):
    (tmp_path / "a-file").write_text("")
    args = ["run", "--models", f"hf:{tiny_phi_dir}", "--tasks", "humaneval", "--limit", "2", "--max-new-tokens", "4",
            "--device", "cpu", "--workers", "1"]
    assert run_main([*args, "--out", str(tmp_path / "a-file")]) == 2
    assert not (phi_home / "cache.sqlite").exists(), "nothing runs before the output is known to be writable"
    capsys.readouterr()
    assert run_main([*args, "--out", str(tmp_path / "first")]) == 0
    capsys.readouterr()
    assert run_main([*args, "--out", str(tmp_path / "second")]) == 0
    assert "2 of 2 completions from the cache" in capsys.readouterr().err


def test_replay_covering_the_first_problems_runs_with_limit(bad_files, phi_home, capsys):
    assert run_main(["run", "--models", f"replay:{bad_files}/one.jsonl", "--tasks", "humaneval", "--limit", "1",
                     "--out", str(bad_files / "out"), "--workers", "1"]) == 0


def test_lone_surrogate_in_a_completion_is_written_escaped(tmp_path, phi_home, capsys):
    replay = tmp_path / "surrogate.jsonl"
    replay.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return 1  # \udcff\n"}) + "\n")
    assert run_main(["run", "--models", f"replay:{replay}", "--tasks", "humaneval", "--limit", "1",
                     "--out", str(tmp_path / "out"), "--workers", "1"]) == 0, capsys.readouterr().err
    samples = next((tmp_path / "out").glob("*/samples_humaneval.jsonl"))
    assert "\\udcff" in samples.read_text(encoding="utf-8")
    assert json.loads(samples.read_text(encoding="utf-8"))["completion"] == "    return 1  # \udcff\n"


def test_full_disk_is_one_line(tmp_path, phi_home, capsys, monkeypatch):
    import sqlite3

    from phi_eval.cache import Cache

    cache = Cache(tmp_path / "cache.sqlite")

    class Full:
        def execute(self, *a):
            raise sqlite3.OperationalError("database or disk is full")

        executemany = execute

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(cache, "_db", Full())
    from phi_eval.errors import UsageError

    with pytest.raises(UsageError, match="disk .* is full.*free"):
        cache.put("generation", "k", {"text": "x"})


def test_ctrl_c_is_exit_130_and_one_line(tmp_path, phi_home):
    """SIGINT while the sandbox runs programs: exit 130, one line, no KeyboardInterrupt from the workers."""
    import signal
    import time

    replay = tmp_path / "slow.jsonl"
    with open(replay, "w") as f:
        for i in range(8):
            f.write(json.dumps({"task_id": f"HumanEval/{i}", "completion": "    import time; time.sleep(60)\n"}) + "\n")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PHI_EVAL_HOME": str(phi_home), "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen([sys.executable, "-m", "phi_eval.cli", "run", "--models", f"replay:{replay}", "--tasks",
                             "humaneval", "--limit", "8", "--timeout", "5", "--workers", "2",
                             "--out", str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as from a terminal: a suite started in the background (`cmd &`) ignores
                            # SIGINT, and its children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "tmp").glob("phi-eval-worker-*")) and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.5)  # the programs are running
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip() and "it/s" not in line and "%|" not in line]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
