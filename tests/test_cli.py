"""`phi-eval` end to end: runs that write lm-eval-shaped results, and bad input that exits 2 in one line."""
import json

import pytest

from phi_eval.cli import main
from phi_eval.tasks import TASKS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_replay(path, completions: dict[str, list[str]]):
    with open(path, "w") as f:
        for task_id, texts in completions.items():
            for text in texts:
                f.write(json.dumps({"task_id": task_id, "completion": text}) + "\n")
    return path


def test_replay_of_canonical_solutions_scores_one(tmp_path, phi_home, capsys):
    docs = TASKS["humaneval"].load_docs(None)[:6]
    # Two samples per problem: the canonical one and a wrong one, so pass@1 is 0.5 and pass@2 undefined.
    samples = write_replay(tmp_path / "samples.jsonl",
                           {d["doc_id"]: [d["canonical_solution"], "    return None\n"] for d in docs})
    code, out, err = run_cli(capsys, "run", "--models", f"replay:{samples}", "--tasks", "humaneval", "--limit", "6",
                             "--out", str(tmp_path / "out"), "--workers", "2")
    assert code == 0, err
    results_path = next((tmp_path / "out").glob("*/results.json"))
    results = json.loads(results_path.read_text())
    assert results["results"]["humaneval"]["pass@1,none"] == pytest.approx(0.5)
    assert "pass@10,none" not in results["results"]["humaneval"]
    assert results["n-samples"]["humaneval"] == {"original": 6, "effective": 6}
    assert results["config"]["backend"] == "replay"
    for key in ("model_identity", "revision", "packages", "hardware", "generation", "seeds", "sandbox", "wall_time_s"):
        assert key in results["reproducibility"]
    records = [json.loads(line) for line in (results_path.parent / "samples_humaneval.jsonl").open()]
    assert len(records) == 12
    assert [r["passed"] for r in records[:2]] == [True, False]
    assert records[1]["error_kind"] == "failed" and records[1]["reason"]
    assert {"prompt", "completion", "doc_hash", "prompt_hash", "target_hash"} <= set(records[0])


def test_hf_run_writes_results_and_samples_for_both_tasks(tiny_phi_dir, mbpp_dir, tmp_path, phi_home, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "run", "--models", f"hf:{tiny_phi_dir}", "--tasks", "code",
                                "--limit", "3", "--max-new-tokens", "16", "--data-dir", str(mbpp_dir),
                                "--out", str(out), "--device", "cpu")
    assert code == 0, err
    model_dir = next(out.iterdir())
    results = json.loads((model_dir / "results.json").read_text())
    assert set(results["results"]) == {"humaneval", "mbpp"}
    assert results["n-shot"] == {"humaneval": 0, "mbpp": 3}
    assert results["results"]["mbpp"]["pass@1,none"] == 0.0  # a random model does not solve MBPP
    assert results["config"]["parameters"] > 0
    assert results["reproducibility"]["revision"]
    assert len((model_dir / "samples_mbpp.jsonl").read_text().splitlines()) == 3


def test_zoo_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "zoo", "list", "--json")
    names = {card["name"] for card in json.loads(out)}
    assert {"phi-1", "phi-1.5", "phi-2", "gpt-4", "phi-tiny"} <= names
    code, out, _ = run_cli(capsys, "zoo", "show", "phi-1")
    assert json.loads(out)["hub_id"] == "microsoft/phi-1"


@pytest.mark.parametrize("argv, fix", [
    (["run", "--models", "phi-3000", "--tasks", "humaneval"], "zoo list"),
    (["run", "--models", "hf:x", "--tasks", "humaneva"], "did you mean"),
    (["run", "--models", "replay:/nonexistent.jsonl", "--tasks", "humaneval"], "nonexistent"),
    (["run", "--models", "hf:x", "--tasks", "mbpp", "--data-dir", "/nonexistent"], "--data-dir"),
    (["run", "--models", "hf:x", "--tasks", "humaneval", "--batch-size", "zero"], "--batch-size"),
    (["zoo", "show", "phi-1.6"], "phi-1.5"),
    (["run", "--models", "hf:example-org/not-in-any-cache", "--tasks", "humaneval"], "HF_HUB_OFFLINE=1"),
    (["train", "/nonexistent/recipe.yaml"], "recipe"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fix, capsys, phi_home):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and fix in err and "Traceback" not in err


def test_malformed_samples_file_names_the_line(tmp_path, capsys, phi_home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "completion": "x"}\nnot json\n')
    code, _, err = run_cli(capsys, "run", "--models", f"replay:{bad}", "--tasks", "humaneval",
                           "--out", str(tmp_path / "out"))
    assert code == 2 and "bad.jsonl:2" in err


def test_untrained_local_model_says_how_to_train_it(capsys, phi_home):
    code, _, err = run_cli(capsys, "run", "--models", "phi-tiny", "--tasks", "humaneval")
    assert code == 2 and "phi-eval train recipes/phi-tiny.yaml" in err
