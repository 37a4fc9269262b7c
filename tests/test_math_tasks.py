"""GSM8K two ways: lm-eval's gsm8k_cot (prompt, stops, extraction and scoring checked against lm-eval's own
YAML, filters and metric) and phi-1.5's "via coding" setting scored through the real sandbox."""
import json
from pathlib import Path

import lm_eval
import pytest
from conftest import SHARED_BENCHMARKS
from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.filters.extraction import RegexFilter
from lm_eval.filters.selection import TakeFirstFilter
from lm_eval.tasks._yaml_loader import load_yaml

from phi_eval.cli import main
from phi_eval.errors import UsageError
from phi_eval.tasks import TASKS, gsm8k
from phi_eval.tasks.gsm8k_code import EXEMPLAR_BODIES, SHOTS, header

LM_EVAL_YAML = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
PROBLEMS = [  # (question, worked answer in the release's format)
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A pen costs $1,200 in a \"luxury\" shop. What do 2 pens cost?", "2 * 1200 = <<2*1200=2400>>2400\n#### 2,400"),
    ("Sam had 10 dollars and spent 12. How many dollars is he short?", "10 - 12 = -2\n#### -2"),
    ("Half of 5 is what?", "5 / 2 = 2.5\n#### 2.5"),
]
COMPLETIONS = [  # extraction cases, strict and flexible; several come from lm-eval's own test strings
    " 3 + 4 = 7. The answer is 7.\n\n",
    " The answer is $2,400.",
    " So he is short 2 dollars, -2 in all. The answer is -2.",
    " 5 / 2 = 2.5, so the answer is 2.5",
    " I do not know.",
    " The answer is 1,234.5.\nThe answer is 9.",
    " It costs $12.50 and 3 more. The answer is 15.5",
    " #### 42",
    " The answer is .",
    "",
]


def lm_eval_config() -> dict:
    return load_yaml(LM_EVAL_YAML, resolve_func=False)


def write_gsm8k(root: Path) -> Path:
    (root / "gsm8k").mkdir(parents=True, exist_ok=True)
    with open(root / "gsm8k" / "test.jsonl", "w") as f:
        for question, answer in PROBLEMS:
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")
    return root


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_constants_are_lm_evals_gsm8k_cot():
    config = lm_eval_config()
    assert config["num_fewshot"] == TASKS["gsm8k"].n_shot == 8
    assert [(s["question"], s["target"]) for s in config["fewshot_config"]["samples"]] == list(gsm8k.COT_EXEMPLARS)
    assert tuple(config["generation_kwargs"]["until"]) == gsm8k.STOP
    filters = {f["name"]: f["filter"] for f in config["filter_list"]}
    assert set(filters) == set(gsm8k.FILTERS)
    for name, (pattern, group) in gsm8k.FILTERS.items():
        regex, take_first = filters[name]
        assert (regex["regex_pattern"], regex.get("group_select", 0)) == (pattern, group)
        assert take_first["function"] == "take_first"
    (metric,) = config["metric_list"]
    assert tuple(metric["regexes_to_ignore"]) == gsm8k.REGEXES_TO_IGNORE and metric["ignore_case"]
    assert TASKS["gsm8k"].version == str(config["metadata"]["version"])


def test_extraction_and_exact_match_equal_lm_evals_filters_and_metric():
    config = lm_eval_config()
    for spec in config["filter_list"]:
        regex = {k: v for k, v in spec["filter"][0].items() if k != "function"}
        lm_filters = [RegexFilter(**regex), TakeFirstFilter()]
        for completion in COMPLETIONS:
            responses = [[completion]]
            for lm_filter in lm_filters:
                responses = lm_filter.apply(responses, [{}])
            expected = list(responses)[0]
            assert gsm8k.extract_answers(completion)[spec["name"]] == expected, (spec["name"], completion)
    metric = {k: v for k, v in config["metric_list"][0].items()
              if k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    for completion in COMPLETIONS:
        for _, answer in PROBLEMS:
            target = answer.split("####")[-1].strip()
            for extracted in gsm8k.extract_answers(completion).values():
                lm = exact_match_hf_evaluate([extracted], [target], **metric)["exact_match"]
                assert gsm8k.exact_match(extracted, target) == lm, (extracted, target)


def lm_eval_gsm8k_task(rows: list[dict]):
    import datasets
    from lm_eval.api.task import ConfigurableTask

    config = load_yaml(LM_EVAL_YAML, resolve_func=True)
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
    config.update(custom_dataset=lambda **_: dataset)
    return ConfigurableTask(config=config)


def test_prompt_and_target_equal_lm_evals(tmp_path):
    data_dir = SHARED_BENCHMARKS if (SHARED_BENCHMARKS / "gsm8k" / "test.jsonl").exists() else write_gsm8k(tmp_path)
    docs = TASKS["gsm8k"].load_docs(data_dir)[:5]
    task = lm_eval_gsm8k_task([{"question": d["question"], "answer": d["answer"]} for d in docs])
    for doc, lm_doc in zip(docs, task.eval_docs):
        assert TASKS["gsm8k"].prompt(doc) == task.fewshot_context(lm_doc, num_fewshot=8)
        assert doc["target"] == task.doc_to_target(lm_doc)
    assert docs[0]["doc_id"] == "gsm8k/0"


def test_shared_test_split_has_1319_problems():
    if not (SHARED_BENCHMARKS / "gsm8k" / "test.jsonl").exists():
        pytest.skip("shared benchmarks absent")
    docs = TASKS["gsm8k"].load_docs(SHARED_BENCHMARKS)
    assert len(docs) == 1319 and docs[0]["target"] == "18"


def test_missing_data_is_one_usage_error_naming_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    with pytest.raises(UsageError, match="--data-dir"):
        TASKS["gsm8k"].load_docs(None)
    with pytest.raises(UsageError, match="gsm8k/test.jsonl"):
        TASKS["gsm8k_code"].load_docs(tmp_path)


def write_replay(path: Path, completions: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"task_id": k, "completion": v}) + "\n" for k, v in completions.items()))
    return path


def test_gsm8k_cot_scores_replayed_completions(tmp_path, phi_home, capsys):
    data_dir = write_gsm8k(tmp_path / "data")
    replay = write_replay(tmp_path / "cot.jsonl", {
        "gsm8k/0": " 3 + 4 = 7. The answer is 7.",  # both extractions right
        "gsm8k/1": " Two pens cost $2,400 in all.",  # only the flexible extraction finds it
        "gsm8k/2": " The answer is -2. He pays 5 later.",  # strict right, flexible takes the last number
        "gsm8k/3": " The answer is 3.",  # both wrong
    })
    code, _, err = run_cli(capsys, "run", "--models", f"replay:{replay}", "--tasks", "gsm8k", "--data-dir",
                           str(data_dir), "--out", str(tmp_path / "out"))
    assert code == 0, err
    model_dir = next((tmp_path / "out").iterdir())
    results = json.loads((model_dir / "results.json").read_text())["results"]["gsm8k"]
    assert results["exact_match,strict-match"] == pytest.approx(0.5)
    assert results["exact_match,flexible-extract"] == pytest.approx(0.5)
    assert results["exact_match_stderr,strict-match"] == pytest.approx((1 / 12) ** 0.5)  # [1, 0, 1, 0]
    records = [json.loads(line) for line in (model_dir / "samples_gsm8k.jsonl").open()]
    assert records[1]["extracted"] == {"strict-match": "[invalid]", "flexible-extract": "$2,400"}
    assert records[1]["scores"] == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
    assert records[2]["target"] == "-2" and records[2]["prompt"].endswith(f"Q: {PROBLEMS[2][0]}\nA:")


def test_gsm8k_code_exemplars_return_their_answers_in_the_sandbox():
    from phi_eval.execution import Limits, Sandbox

    task = TASKS["gsm8k_code"]
    docs = [{"question": q, "target": a.rsplit("The answer is ", 1)[1].rstrip(".")} for q, a in gsm8k.COT_EXEMPLARS]
    programs = [(task.program(doc, body), task.tests(doc)) for doc, body in zip(docs, EXEMPLAR_BODIES)]
    with Sandbox(workers=2, limits=Limits(timeout_s=10)) as sandbox:
        verdicts = sandbox.check_all(programs, progress=False)
    assert all(v.passed for v in verdicts), [v.reason for v in verdicts]
    assert SHOTS.count("def solution():") == 8
    doc = {"question": PROBLEMS[1][0], "target": "2,400"}
    assert task.prompt(doc) == SHOTS + header(PROBLEMS[1][0])
    assert task.prompt(doc).endswith('    """A pen costs $1,200 in a \\"luxury\\" shop. What do 2 pens cost?"""\n')


def test_gsm8k_code_counts_correct_wrong_crashed_and_timed_out(tmp_path, phi_home, capsys):
    data_dir = write_gsm8k(tmp_path / "data")
    replay = write_replay(tmp_path / "code.jsonl", {
        "gsm8k/0": "    apples = 3\n    return apples + 4\n",  # correct
        "gsm8k/1": "    return 2 * 1200.0000001\n",  # correct: gold 2,400 within the tolerance
        "gsm8k/2": "    return '-2'\n",  # wrong: a string is not a number
        "gsm8k/3": "    return 1 / 0\n",  # crashed
    })
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--models", f"replay:{replay}", "--tasks", "gsm8k_code", "--data-dir",
                           str(data_dir), "--out", str(out), "--workers", "2", "--timeout", "2")
    assert code == 0, err
    model_dir = next(out.iterdir())
    results = json.loads((model_dir / "results.json").read_text())["results"]["gsm8k_code"]
    assert results["exact_match,none"] == pytest.approx(0.5)
    assert (results["correct,none"], results["wrong,none"], results["crashed,none"], results["timed_out,none"]) \
        == (2, 1, 1, 0)
    records = [json.loads(line) for line in (model_dir / "samples_gsm8k_code.jsonl").open()]
    assert [r["outcome"] for r in records] == ["correct", "correct", "wrong", "crashed"]
    assert records[3]["scores"] == {"exact_match": 0.0} and "ZeroDivisionError" in records[3]["reason"]
    assert "not a number" in records[2]["reason"]

    replay = write_replay(tmp_path / "code2.jsonl", {
        "gsm8k/0": "    while True:\n        pass\n",  # timed out
        "gsm8k/1": "    return 2401\n",  # wrong
        "gsm8k/2": "    import sys\n    sys.exit(0)\n",  # crashed: exiting is no answer
        "gsm8k/3": "    return (\n",  # crashed: a syntax error
    })
    code, _, err = run_cli(capsys, "run", "--models", f"replay:{replay}", "--tasks", "gsm8k_code", "--data-dir",
                           str(data_dir), "--out", str(tmp_path / "out2"), "--workers", "2", "--timeout", "2")
    assert code == 0, err
    model_dir = next((tmp_path / "out2").iterdir())
    records = [json.loads(line) for line in (model_dir / "samples_gsm8k_code.jsonl").open()]
    assert [r["outcome"] for r in records] == ["timed_out", "wrong", "crashed", "crashed"]
    results = json.loads((model_dir / "results.json").read_text())["results"]["gsm8k_code"]
    assert results["exact_match,none"] == 0.0 and results["timed_out,none"] == 1
