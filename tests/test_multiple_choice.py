"""Multiple-choice tasks: release-file converters, hub fallback, few-shot, batching and the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_BENCHMARKS
from phi_eval.errors import UsageError
from phi_eval.tasks import TASKS, local_data, multiple_choice, resolve_tasks

SUITE = ("winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag", "openbookqa")
MMLU_SUBJECTS = ("astronomy", "college_biology")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_release_fixture(root: Path, items: int = 12) -> Path:
    """Every benchmark's release files (the layout of shared/benchmarks) with generated items."""
    def jsonl(path: str, rows: list[dict]) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def labels(path: str, values: list) -> None:
        (root / path).write_text("".join(f"{v}\n" for v in values))

    n = range(items)
    jsonl("winogrande/dev.jsonl", [{"qID": f"q{i}", "sentence": f"The cat saw the dog {i} so _ ran away.",
                                    "option1": "the cat", "option2": "the dog", "answer": str(1 + i % 2)} for i in n])
    labels("winogrande/dev-labels.lst", [1 + i % 2 for i in n])
    jsonl("piqa/valid.jsonl", [{"goal": f"How to open jar {i}?", "sol1": "twist the lid", "sol2": "hit it hard"}
                               for i in n])
    labels("piqa/valid-labels.lst", [i % 2 for i in n])
    jsonl("siqa/dev.jsonl", [{"context": f"Alex lent Sam {i} dollars.", "question": "How would Sam feel?",
                              "answerA": "grateful", "answerB": "angry", "answerC": "bored"} for i in n])
    labels("siqa/dev-labels.lst", [1 + i % 3 for i in n])
    (root / "hellaswag").mkdir(parents=True, exist_ok=True)
    (root / "hellaswag" / "hellaswag_val_full.txt").write_text("".join(
        f"Cooking: A man cracks {i} eggs. he\n{i % 4}\nstirs them.\nsings.\nleaves.\nfries them in a pan.\n"
        for i in n))
    for level in ("easy", "challenge"):
        jsonl(f"arc/arc_{level}.jsonl", [{"query": f"Question: What is {i} plus one?",
                                          "choices": [str(i + 1), str(i), "seven", "blue"], "gold": 0} for i in n])
    jsonl("boolq/boolq.jsonl", [{"query": f"Passage: Water boils at 100 degrees {i}.\nQuestion: does water boil?",
                                 "choices": ["no", "yes"], "gold": 1} for i in n])
    jsonl("openbookqa/openbook_qa.jsonl", [{"query": f"The sun is a {i}", "choices": ["star", "moon", "rock", "car"],
                                            "gold": 0} for i in n])
    return root


def mmlu_hub_rows(items: int = 6) -> dict[str, list[dict]]:
    """cais/mmlu "all" in its hub schema: question, subject, choices, answer (an index)."""
    def rows(split: str, count: int) -> list[dict]:
        return [{"question": f"{subject} {split} question {i}?", "subject": subject,
                 "choices": [f"option {k} of {i}" for k in range(4)], "answer": (i + len(subject)) % 4}
                for subject in MMLU_SUBJECTS for i in range(count)]
    return {"test": rows("test", items), "dev": rows("dev", 5), "validation": rows("validation", 2)}


@pytest.fixture
def mmlu_hub(monkeypatch):
    """The hub as a machine with cais/mmlu in its datasets cache would see it."""
    real = local_data.load_hub

    def load_hub(path, name):
        return mmlu_hub_rows() if (path, name) == ("cais/mmlu", "all") else real(path, name)

    monkeypatch.setattr(local_data, "load_hub", load_hub)
    multiple_choice.build_subtasks.cache_clear()
    yield
    multiple_choice.build_subtasks.cache_clear()


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    return write_release_fixture(tmp_path_factory.mktemp("benchmarks"))


@pytest.fixture(scope="module")
def tiny_model(tiny_phi_dir):
    from phi_eval.models.hf import HFModel

    return HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float32", batch_size=8)


def context(data_dir: Path | None, num_fewshot: int | None = None, tmp: Path = Path("unused")):
    from phi_eval.cache import NoCache
    from phi_eval.evaluate import RunOptions
    from phi_eval.steps import EvalContext

    return EvalContext(RunOptions(out=tmp, data_dir=data_dir, progress=False, num_fewshot=num_fewshot), NoCache())


# -- converters -------------------------------------------------------------------------------------

REAL_COUNTS = {"winogrande": 1267, "piqa": 1838, "siqa": 1954, "hellaswag": 10042, "arc_easy": 2376,
               "arc_challenge": 1172, "boolq": 3270, "openbookqa": 500}


@pytest.mark.parametrize("name", SUITE)
def test_converters_read_the_real_release_files(name):
    if local_data.load_local(name, SHARED_BENCHMARKS) is None if SHARED_BENCHMARKS.is_dir() else True:
        pytest.skip("shared benchmarks absent")
    docs = TASKS[name].load_docs(SHARED_BENCHMARKS)
    assert len(docs) == REAL_COUNTS[name]
    assert len({d["doc_id"] for d in docs}) == len(docs)
    requests = TASKS[name].requests(docs[:3], SHARED_BENCHMARKS)
    for _, _, arguments in requests:
        assert len(arguments) >= 2 and all(context and continuation for context, continuation in arguments)


def test_converted_items_read_as_the_release_says():
    if not (SHARED_BENCHMARKS / "hellaswag").is_dir():
        pytest.skip("shared benchmarks absent")
    first = {name: TASKS[name].requests(TASKS[name].load_docs(SHARED_BENCHMARKS)[:1], SHARED_BENCHMARKS)[0]
             for name in SUITE}
    task, doc, arguments = first["winogrande"]  # "... so _ always got the easier cases.", answer 2
    assert arguments[1] == ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")
    assert task.doc_to_text(doc) == 1
    task, doc, arguments = first["hellaswag"]
    assert arguments[3] == ("Roof shingle removal: A man is sitting on a roof. he",
                            " starts pulling up roofing on a roof.")
    assert task.doc_to_target(doc) == 3
    task, doc, arguments = first["boolq"]
    assert arguments[0][0].endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert task.doc_to_target(doc) == 0
    task, doc, arguments = first["arc_challenge"]
    assert arguments[0][0].startswith("Question: An astronomer observes") and arguments[0][0].endswith("\nAnswer:")
    assert arguments[task.doc_to_target(doc)][1] == " Planetary days will become shorter."
    task, doc, arguments = first["siqa"]
    assert arguments[task.doc_to_target(doc)][1] == " Find somewhere to go"
    task, doc, arguments = first["piqa"]
    assert task.doc_to_target(doc) == 0 and "ripped paper strips" in arguments[0][1]


def test_release_fixture_loads_every_task(release_dir):
    for name in SUITE:
        docs = TASKS[name].load_docs(release_dir)
        assert len(docs) == 12 and docs[0]["doc_id"] == "0"


def test_a_partial_release_is_a_usage_error(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(UsageError, match="valid-labels.lst"):
        local_data.load_local("piqa", tmp_path)
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(UsageError, match="1 items but 2 labels"):
        local_data.load_local("piqa", tmp_path)


@pytest.mark.parametrize("name", ["arc_easy", "mmlu"])
def test_offline_without_data_dir_names_the_flag(name, tmp_path):
    multiple_choice.build_subtasks.cache_clear()
    with pytest.raises(UsageError, match="--data-dir") as error:
        TASKS[name].load_docs(None)
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="--data-dir"):  # a data dir without the benchmark falls back to the hub
        TASKS[name].load_docs(tmp_path)


# -- scoring ----------------------------------------------------------------------------------------

def test_shared_prefix_scores_equal_one_row_per_pair(tiny_model):
    from tqdm import tqdm

    pairs = [("Question: Why is the sky blue?\nAnswer:", f" because {x}") for x in ("of air", "it is", "blue light")]
    pairs += [("The dog and the cat", " sat."), ("The dog and the bird", " sat."), ("", "hello world"),
              ("def f(x):  ", "return x"), ("x", "")]
    ours = tiny_model.loglikelihood(pairs, progress=False)
    trees, alone = tiny_model._trees([tiny_model._split_pair(c, x) for c, x in pairs])
    assert [members for _, members in trees] == [[0, 1, 2], [3, 4], [5], [6]] and alone == [7]
    rows = tiny_model._score_tokens([tiny_model._split_pair(c, x) for c, x in pairs], tqdm(disable=True))
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in rows]
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in rows], abs=1e-4)
    assert ours[-1] == (0.0, True)


@pytest.mark.parametrize("name", ["hellaswag", "winogrande", "boolq", "mmlu"])
def test_batch_sizes_give_identical_predictions(name, tiny_phi_dir, release_dir, mmlu_hub, tmp_path):
    from phi_eval.models.hf import HFModel

    data_dir = release_dir
    task = TASKS[name]
    docs = task.load_docs(data_dir)[:16]
    outcomes = []
    for batch_size in (1, 8, "auto"):
        model = HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float32", batch_size=batch_size)
        records = task.samples(model, docs, context(data_dir))
        outcomes.append(([(r["prediction"], r["prediction_norm"], r["scores"]) for r in records],
                         [r["loglikelihoods"] for r in records]))
    assert outcomes[0][0] == outcomes[1][0] == outcomes[2][0]
    for lls in outcomes[1][1], outcomes[2][1]:
        assert [x for row in lls for x in row] == pytest.approx([x for row in outcomes[0][1] for x in row], abs=1e-4)


def test_records_carry_choices_scores_and_hashes(tiny_model, release_dir):
    task = TASKS["arc_easy"]
    records = task.samples(tiny_model, task.load_docs(release_dir)[:4], context(release_dir))
    record = records[0]
    assert record["prompt"] == "Question: What is 0 plus one?\nAnswer:"
    assert record["choices"] == [" 1", " 0", " seven", " blue"] and record["gold"] == 0
    assert len(record["loglikelihoods"]) == 4 and set(record["scores"]) == {"acc", "acc_norm"}
    assert record["scores"]["acc"] == float(record["prediction"] == record["gold"])
    assert {"doc_hash", "prompt_hash", "target_hash"} <= set(record)
    metrics = task.metrics(records)
    assert metrics["acc,none"] == sum(r["scores"]["acc"] for r in records) / 4
    assert metrics["acc_stderr,none"] >= 0


def test_mmlu_release_csv_files_give_the_hub_items(mmlu_hub, tmp_path, monkeypatch):
    import csv

    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        for subject in MMLU_SUBJECTS:
            with open(tmp_path / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows([r["question"], *r["choices"], "ABCD"[r["answer"]]]
                                        for r in mmlu_hub_rows()[split] if r["subject"] == subject)
    task = TASKS["mmlu"]
    hub_docs = task.load_docs(None)
    local_docs = task.load_docs(tmp_path)
    assert local_docs == hub_docs
    requests = [(doc, arguments) for _, doc, arguments in task.requests(local_docs[:3], tmp_path)]
    assert requests == [(doc, arguments) for _, doc, arguments in task.requests(hub_docs[:3], None)]
    assert task.missing_local_data(tmp_path) is None
    assert "alone in --tasks" in task.missing_local_data(tmp_path / "elsewhere")


# -- few-shot ---------------------------------------------------------------------------------------

def test_mmlu_is_two_shot_from_dev_with_the_subject_description(mmlu_hub):
    task = TASKS["mmlu"]
    docs = task.load_docs(None)
    assert [d["doc_id"] for d in docs[:2]] == ["astronomy/0", "astronomy/1"] and len(docs) == 12
    _, _, arguments = task.requests(docs[:1], None)[0]
    prompt = arguments[0][0]
    assert prompt.startswith("The following are multiple choice questions (with answers) about astronomy.\n\n"
                             "astronomy dev question 0?\nA. option 0 of 0\n")
    assert prompt.count("Answer:") == 3 and "astronomy dev question 1?" in prompt
    assert "dev question 2" not in prompt and [c for _, c in arguments] == [" A", " B", " C", " D"]


def test_num_fewshot_overrides_the_tasks_own(mmlu_hub, release_dir, capsys):
    from phi_eval.evaluate import with_num_fewshot

    mmlu, arc, humaneval = with_num_fewshot([TASKS["mmlu"], TASKS["arc_easy"], TASKS["humaneval"]], 0)
    assert (mmlu.n_shot, arc.n_shot, humaneval.n_shot) == (0, 0, TASKS["humaneval"].n_shot)
    assert "--num-fewshot does not apply to humaneval" in capsys.readouterr().err
    _, _, arguments = mmlu.requests(mmlu.load_docs(None)[:1], None)[0]
    assert arguments[0][0].count("Answer:") == 1 and "dev question" not in arguments[0][0]
    (arc_1shot,) = with_num_fewshot([TASKS["arc_easy"]], 1)
    with pytest.raises(UsageError, match="train split"):  # llm-foundry's ARC copy holds the test split only
        arc_1shot.requests(arc_1shot.load_docs(release_dir)[:1], release_dir)


# -- the command line -------------------------------------------------------------------------------

def test_cli_runs_the_commonsense_group(tiny_phi_dir, tmp_path, phi_home, mmlu_hub, capsys):
    from phi_eval.cli import main

    if not (SHARED_BENCHMARKS / "hellaswag").is_dir():
        pytest.skip("shared benchmarks absent")
    out = tmp_path / "run"
    # a group takes only what the data dir holds; mmlu named alone comes from the (patched) hub
    assert "mmlu" not in [t.name for t in resolve_tasks("commonsense", SHARED_BENCHMARKS)]
    assert main(["run", "--models", f"hf:{tiny_phi_dir}", "--tasks", "commonsense,mmlu", "--data-dir",
                 str(SHARED_BENCHMARKS), "--limit", "5", "--out", str(out), "--device", "cpu"]) == 0
    (results_path,) = out.glob("*/results.json")
    results = json.loads(results_path.read_text())
    assert set(results["results"]) == {*SUITE, "mmlu"}
    for name, metrics in results["results"].items():
        assert {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"} <= set(metrics), name
        assert 0 <= metrics["acc,none"] <= 1
    assert results["n-shot"]["mmlu"] == 2 and results["n-shot"]["arc_easy"] == 0
    samples = (results_path.parent / "samples_hellaswag.jsonl").read_text().splitlines()
    assert len(samples) == 5 and "loglikelihoods" in json.loads(samples[0])
    assert "hellaswag acc=" in capsys.readouterr().out
