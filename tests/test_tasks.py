"""HumanEval and MBPP: the right items, lm-eval's prompts, and reference solutions that pass."""
import json
from pathlib import Path

import jinja2
import pytest
import yaml

from phi_eval.errors import UsageError
from phi_eval.tasks import TASKS, resolve_tasks

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def test_humaneval_has_the_164_problems_of_the_package():
    docs = TASKS["humaneval"].load_docs(None)
    assert len(docs) == 164 and docs[0]["doc_id"] == "HumanEval/0"
    assert TASKS["humaneval"].prompt(docs[0]) == docs[0]["prompt"]
    assert TASKS["humaneval"].tests(docs[0]).rstrip().endswith(f"check({docs[0]['entry_point']})")


def test_humaneval_stop_sequences_are_lm_evals():
    config = yaml.safe_load((LM_EVAL_TASKS / "humaneval" / "humaneval.yaml").read_text().replace("!function", ""))
    assert list(TASKS["humaneval"].stop) == config["generation_kwargs"]["until"]


def render_lm_eval_mbpp_prompt(doc: dict, shots: list[dict]) -> str:
    """lm-eval's mbpp task prompt, rendered from its own YAML templates (shots joined by "\\n\\n")."""
    config = yaml.safe_load((LM_EVAL_TASKS / "mbpp" / "mbpp.yaml").read_text().replace("!function", ""))
    text = jinja2.Template(config["doc_to_text"], keep_trailing_newline=True)
    target = jinja2.Template(config["doc_to_target"], keep_trailing_newline=True)
    rendered = [text.render(**s) + config["target_delimiter"] + target.render(**s, is_fewshot=True) for s in shots]
    return "\n\n".join(rendered) + "\n\n" + text.render(**doc)


def test_mbpp_test_split_and_prompt_match_lm_eval(mbpp_dir):
    docs = TASKS["mbpp"].load_docs(mbpp_dir)
    assert [d["doc_id"] for d in docs] == [f"MBPP/{i}" for i in range(11, 511)]
    records = {r["task_id"]: r for r in map(json.loads, (mbpp_dir / "mbpp" / "mbpp.jsonl").open())}
    expected = render_lm_eval_mbpp_prompt(records[11], [records[2], records[3], records[4]])
    assert TASKS["mbpp"].prompt(docs[0]) == expected


def test_mbpp_without_data_dir_offline_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(UsageError, match="--data-dir"):
        TASKS["mbpp"].load_docs(None)
    with pytest.raises(UsageError, match="mbpp/mbpp.jsonl"):
        TASKS["mbpp"].load_docs(tmp_path)


def test_task_names_and_groups():
    assert [t.name for t in resolve_tasks("code")] == ["humaneval", "mbpp"]
    assert [t.name for t in resolve_tasks("mbpp,humaneval,mbpp")] == ["mbpp", "humaneval"]
    with pytest.raises(UsageError, match="did you mean humaneval"):
        resolve_tasks("humaneva")


def test_reference_solutions_pass_in_the_sandbox(mbpp_dir):
    from phi_eval.execution import Limits, Sandbox

    humaneval = TASKS["humaneval"]
    mbpp = TASKS["mbpp"]
    he_docs = humaneval.load_docs(None)
    mbpp_docs = mbpp.load_docs(mbpp_dir)
    programs = [(humaneval.program(d, d["canonical_solution"]), humaneval.tests(d)) for d in he_docs]
    programs += [(mbpp.program(d, d["code"]), mbpp.tests(d)) for d in mbpp_docs]
    # MBPP/123's reference takes ~1.5 s alone; a loaded 2-core machine must not turn that into a failure.
    with Sandbox(workers=4, limits=Limits(timeout_s=10)) as sandbox:
        verdicts = sandbox.check_all(programs, progress=False)
    assert all(v.passed for v in verdicts[:164]), [v.reason for v in verdicts[:164] if not v.passed][:3]
    assert all(v.passed for v in verdicts[164:]), [(d["doc_id"], v.reason) for d, v in zip(mbpp_docs, verdicts[164:]) if not v.passed]
    wrong = [(humaneval.program(d, "    return None\n"), humaneval.tests(d)) for d in he_docs[:5]]
    with Sandbox(workers=2) as sandbox:
        assert not any(v.passed for v in sandbox.check_all(wrong, progress=False))


def test_a_broken_release_file_names_its_bad_line(tmp_path):
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text('{"task_id": 1}\n\n[1, 2]\n')
    with pytest.raises(UsageError, match=r"mbpp.jsonl:3 is not a JSON object"):
        TASKS["mbpp"].load_docs(tmp_path)
