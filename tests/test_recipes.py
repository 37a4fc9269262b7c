"""Recipes: every shipped recipe validates and builds the published architecture (counted on
the meta device, never allocated); the schema's newer sections (micro-batches, checkpoints,
finetune, evaluate, data stages, JSONL corpora) name the field at fault; a trained model
registers in the zoo, logs MFU, runs its evaluation; two recipes compare at equal compute."""
import json
import math
import sysconfig

import pytest
import yaml

from phi_eval.cli import main
from phi_eval.errors import UsageError
from phi_eval.paths import PROJECT_ROOT
from phi_eval.train import load_recipe, train
from phi_eval.train.flops import model_flops_per_token, parameter_count
from phi_eval.train.model import phi_config
from test_train import TINY_MODEL, error_of, write_code_corpus, write_recipe

RECIPES = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.model.rotary_dim * 2 == recipe.model.head_dim  # phi rotates half of each head
    assert "NOT PUBLISHED" in path.read_text() or path.stem.startswith("phi-tiny")


@pytest.mark.parametrize("name, layers, hidden, billions", [
    ("phi-1", 24, 2048, 1.418), ("phi-1.5", 24, 2048, 1.418), ("phi-1-small", 20, 1024, 0.357)])
def test_paper_recipes_build_the_published_model(name, layers, hidden, billions):
    recipe = load_recipe(PROJECT_ROOT / "recipes" / f"{name}.yaml")
    config = phi_config(recipe.model, vocab_size=50295, eos_id=50256)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, hidden // 64)
    assert config.vocab_size == 51200 and config.max_position_embeddings == 2048
    assert config.rope_parameters["partial_rotary_factor"] * 64 == 32
    assert parameter_count(config) / 1e9 == pytest.approx(billions, abs=0.001)  # PHI_FACTS.md §4.1
    assert recipe.tokenizer.path == "Salesforce/codegen-350M-mono"


def test_phi_1_batch_is_1024_by_2048_through_accumulation():
    recipe = load_recipe(PROJECT_ROOT / "recipes" / "phi-1.yaml")
    t = recipe.training
    assert t.tokens_per_step == 1024 * 2048
    assert t.accumulation_steps(devices=8) == 16 and t.accumulation_steps(devices=1) == 128
    assert (t.lr, t.warmup_steps, t.weight_decay, t.schedule) == (1e-3, 750, 0.1, "linear")
    assert recipe.finetune.training.lr == 1e-4 and recipe.finetune.training.batch_size == 256
    assert [s["stage"] for s in recipe.data.stages] == ["source", "annotate", "classify", "filter", "synthesize",
                                                        "dedup"]
    assert recipe.evaluate.tasks == ["humaneval", "mbpp"]


def test_tiny_pair_has_equal_compute():
    from phi_eval.train.compare import check_equal_compute

    web, textbook = (load_recipe(PROJECT_ROOT / "recipes" / f"phi-tiny-{k}.yaml") for k in ("web", "textbook"))
    check_equal_compute(web, textbook)
    assert web.data.stages[0] == textbook.data.stages[0]
    assert web.data.stages[0]["inputs"] == [sysconfig.get_paths()["stdlib"]]  # {stdlib} expanded
    with pytest.raises(UsageError, match="trains on 4,096,000 tokens"):
        check_equal_compute(web, load_recipe(textbook.path, ["training.max_steps=1000"]))
    with pytest.raises(UsageError, match="model.layers differs"):
        check_equal_compute(web, load_recipe(textbook.path, ["model.layers=4"]))


def test_flops_per_token_is_6n_plus_attention():
    recipe = load_recipe(PROJECT_ROOT / "recipes" / "phi-1.yaml")
    config = phi_config(recipe.model, vocab_size=51200, eos_id=0)
    n = parameter_count(config) - 51200 * 2048  # the input embedding is a lookup
    assert model_flops_per_token(config, 2048) == 6 * n + 12 * 24 * 2048 * 2048


@pytest.mark.parametrize("sections, expected", [
    ({"training": {"max_steps": 5, "batch_size": 16, "micro_batch_size": 5}},
     "training.micro_batch_size must divide training.batch_size (got 5 and 16)"),
    ({"training": {"max_steps": 5, "checkpoint_every": 0}}, "training.checkpoint_every must be at least 1"),
    ({"training": {"max_steps": 5}, "model": {"vocab_size": 0}}, "model.vocab_size must be at least 1"),
    ({"training": {"max_steps": 5}, "evaluate": {"tasks": ["humaneval", "humaneva"]}},
     "evaluate.tasks names a task phi-eval lacks (unknown task 'humaneva'"),
    ({"training": {"max_steps": 5}, "evaluate": {"batch_size": "big"}}, "evaluate.batch_size must be an integer or auto"),
    ({"training": {"max_steps": 5}, "evaluate": {"top_p": 0}}, "evaluate.top_p must be in (0, 1]"),
    ({"training": {"max_steps": 5}, "finetune": {"training": {"max_steps": 5, "lr": "fast"}}},
     "finetune.training.lr must be a number (got 'fast')"),
    ({"training": {"max_steps": 5}, "finetune": {"training": {}}},
     "finetune.training.max_steps or finetune.training.max_tokens must be set"),
    ({"training": {"max_steps": 5}, "data": {"source": "stdlib", "stages": [{"stage": "source", "inputs": ["x"]}]}},
     "data.stages and data.source are both set"),
    ({"training": {"max_steps": 5}, "data": {"stages": []}}, "data.stages must list at least one stage"),
    ({"training": {"max_steps": 5}, "data": {"stages": "source"}}, "data.stages must be a list of mappings"),
    ({"training": {"max_steps": 5}, "data": {"stages": [{"stage": "source", "inputs": ["x"]},
                                                         {"stage": "filter", "keep_fraction": 3}]}},
     "data.stages[1].keep_fraction"),
    ({"training": {"max_steps": 5}, "data": {"source": ["notes.txt"]}},
     "data.source lists 'notes.txt', which is neither a directory nor a JSONL file"),
])
def test_new_schema_errors_name_the_field(tmp_path, sections, expected):
    sections.setdefault("tokenizer", {"train": {"vocab_size": 512}})
    message = error_of(write_recipe(tmp_path, **sections))
    assert message.startswith(str(tmp_path / "r.yaml") + ": ")
    assert expected in message


def test_jsonl_corpus_trains_and_bad_lines_are_named(tmp_path):
    from phi_eval.train.corpus import collect_corpus
    from phi_eval.train.recipe import DataSpec

    corpus = tmp_path / "corpus.jsonl"
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]
    corpus.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    collected = collect_corpus(DataSpec(source=[str(corpus)], val_fraction=0.2))
    assert sorted(collected.train + collected.val) == sorted(texts)
    assert collected.manifest["files"] == 40
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "corpus.jsonl").write_text(corpus.read_text())
    assert collect_corpus(DataSpec(source=[str(moved / "corpus.jsonl")], val_fraction=0.2)).manifest["sha256"] == \
        collected.manifest["sha256"]
    corpus.write_text('{"text": "x = 1"}\n{"code": "y = 2"}\n')
    with pytest.raises(UsageError, match=rf"{corpus}:2: expected a JSON object with a \"text\" string"):
        collect_corpus(DataSpec(source=[str(corpus)]))


# --- trained models: stages, zoo card, MFU, evaluation, comparison --------------------------

def tiny_recipe(tmp_path, corpus, name, **extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": TINY_MODEL, "tokenizer": {"train": {"vocab_size": 400}},
        "training": {"seq_len": 64, "batch_size": 8, "max_steps": 6, "eval_every": 3, "eval_batches": 1,
                     "log_every": 2},
        **extra,
    }))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained from data stages, with an evaluate: section, in a private home."""
    with pytest.MonkeyPatch.context() as patch:
        tmp = tmp_path_factory.mktemp("recipes")
        patch.setenv("PHI_EVAL_HOME", str(tmp / "home"))
        corpus = write_code_corpus(tmp / "src")
        path = tiny_recipe(tmp, corpus, "staged", data={
            "stages": [{"stage": "source", "inputs": [str(corpus)]}, {"stage": "dedup"}], "val_fraction": 0.2},
            evaluate={"tasks": ["humaneval"], "limit": 2, "max_new_tokens": 8})
        out = train(load_recipe(path), progress=False)
        yield tmp, corpus, out


def test_data_stages_feed_training_and_the_manifest(trained):
    tmp, _, out = trained
    manifest = json.loads((out / "data_manifest.json").read_text())
    assert [s["stage"] for s in manifest["stages"]["stages"]] == ["source", "dedup"]  # run by `data run`'s engine
    assert manifest["stages"]["corpus"]["path"] == str(tmp / "home" / "data" / "staged" / "corpus.jsonl")
    assert manifest["stages"]["phases_reused"] == []
    assert manifest["files"] == 24  # the 24 files of the corpus, one document each
    assert out == tmp / "home" / "models" / "staged"


def test_mfu_and_throughput_are_logged(trained):
    _, _, out = trained
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in log[1:])
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["mfu"] == pytest.approx(summary["tokens_per_s"] * summary["model_flops_per_token"]
                                           / summary["peak_flops_per_s"])
    peaks = json.loads((tmp_home(out) / "peak_flops.json").read_text())
    assert len(peaks) == 1 and math.isclose(next(iter(peaks.values())), summary["peak_flops_per_s"])


def tmp_home(out):
    return out.parent.parent


def test_trained_model_registers_in_the_zoo(trained, capsys, monkeypatch):
    tmp, _, out = trained
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp / "home"))
    assert main(["zoo", "show", "staged"]) == 0
    card = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "training_summary.json").read_text())
    assert card["checkpoint"] == str(out.resolve())
    assert card["recipe"] == str(out.resolve() / "recipe.yaml")
    assert card["data_manifest"] == str(out.resolve() / "data_manifest.json")
    assert (card["parameters"], card["training_tokens"]) == (summary["parameters"], summary["tokens_seen"])
    from phi_eval.zoo import parse_model_spec

    assert parse_model_spec("staged").target == str(out.resolve())


def test_recipe_evaluate_section_runs_the_harness(trained):
    _, _, out = trained
    results = json.loads((out / "eval" / "staged" / "results.json").read_text())
    assert results["n-samples"]["humaneval"]["effective"] == 2
    assert "pass@1,none" in results["results"]["humaneval"]


def test_a_recipe_named_like_a_hub_card_does_not_shadow_it(tmp_path, monkeypatch):
    from phi_eval.zoo import load_zoo, register_trained_model

    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home"))
    card = register_trained_model("phi-1", tmp_path, tmp_path / "recipe.yaml", tmp_path / "m.json", notes="x")
    assert card.stem == "phi-1-local"
    zoo = load_zoo()
    assert zoo["phi-1"].hub_id == "microsoft/phi-1" and zoo["phi-1-local"].checkpoint == tmp_path.resolve()


def test_compare_trains_seeds_of_both_and_writes_the_study(trained, mbpp_dir, monkeypatch):
    from phi_eval.train.compare import CompareOptions, compare

    tmp, corpus, _ = trained
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp / "home"))
    half = tmp / "half"
    half.mkdir()
    for f in sorted(corpus.glob("*.py"))[:12]:
        (half / f.name).write_text(f.read_text())
    # A contamination report that flags HumanEval/0: the clean subset is the other problem.
    report_path = tmp / "contamination.json"
    report_path.write_text(json.dumps({"methods": {"ngram": {}}, "tasks": {"humaneval": {
        "items": [{"doc_id": "HumanEval/0", "flagged": True}, {"doc_id": "HumanEval/1", "flagged": False}],
        "summary": {"by_method": {}}}}}))
    a = load_recipe(tiny_recipe(tmp, corpus, "wide", data={"source": [str(corpus)], "val_fraction": 0.2}))
    b = load_recipe(tiny_recipe(tmp, half, "narrow", data={"stages": [{"stage": "source", "inputs": [str(half)]}],
                                                           "val_fraction": 0.2}))
    options = dict(out=tmp / "cmp", data_dir=mbpp_dir, n_samples=2, limit=2, max_new_tokens=8, progress=False,
                   seeds=2, contamination=report_path)
    text = compare(a, b, CompareOptions(**options)).read_text()
    assert text.startswith("| measure (2 + 2 seeds; mean ± std over seeds) | wide | narrow |")
    for row in ("HumanEval canonical solutions, bits/byte", "MBPP reference code, bits/byte",
                "HumanEval clean subset, bits/byte", "HumanEval pass@1", "compute 6·N·D", "the phi-1.5 talk's prompt",
                "HumanEval/0", "humaneval 1/2"):
        assert row in text
    data = json.loads((tmp / "cmp" / "comparison.json").read_text())
    runs = [run for arm in data["arms"] for run in arm["runs"]]
    assert [r["name"] for r in runs] == ["wide", "wide-seed1", "narrow", "narrow-seed1"]
    assert [r["seed"] for r in runs] == [0, 1, 0, 1] and len({r["train_flops"] for r in runs}) == 1
    assert all(r["humaneval_bits_per_byte"] > 0 and r["mbpp_bits_per_byte"] > 0 for r in runs)
    assert runs[0]["humaneval_bits_per_byte"] != runs[1]["humaneval_bits_per_byte"]  # the seed matters
    assert all(r["humaneval_clean_bits_per_byte"] != r["humaneval_bits_per_byte"] for r in runs)
    row = data["summary"]["humaneval_bits_per_byte"]
    assert row["values"][0] == [r["humaneval_bits_per_byte"] for r in runs[:2]]
    assert row["permutation_p"] >= 1 / 3  # 2 + 2 seeds: 6 splits, the observed one and its mirror
    assert [len(p["completions"]) for p in data["side_by_side"]] == [2, 2]
    assert (tmp / "cmp" / "comparison.png").stat().st_size > 0
    seed1_data = tmp / "home" / "data" / "narrow-seed1"  # the seeds share one run of the data stages
    assert seed1_data.is_symlink() and seed1_data.resolve() == (tmp / "home" / "data" / "narrow").resolve()
    seed1_manifest = json.loads((tmp / "home" / "models" / "narrow-seed1" / "data_manifest.json").read_text())
    reused = seed1_manifest["stages"]["phases_reused"]  # ran once, for seed 0; only the merge again
    assert reused == [name for name in seed1_manifest["stages"]["phase_seconds"] if not name.endswith("-merge")]
    # A second comparison reuses every checkpoint instead of training again.
    mtime = (tmp / "home" / "models" / "wide-seed1" / "model.safetensors").stat().st_mtime
    compare(a, b, CompareOptions(**options))
    assert (tmp / "home" / "models" / "wide-seed1" / "model.safetensors").stat().st_mtime == mtime


def test_study_tests_and_tables():
    from phi_eval.train import study

    assert study.permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert study.permutation_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert study.welch_p([1.0, 1.0], [2.0, 2.0]) is None  # no spread: undefined, not a fake zero
    assert study.welch_p([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) < 0.01
    arms = [{"name": "web", "runs": [{"mbpp_bits_per_byte": v} for v in (3.0, 3.2, 3.1)]},
            {"name": "textbook", "runs": [{"mbpp_bits_per_byte": v} for v in (2.0, 2.1, 2.2)]}]
    row = study.summarize(arms)["mbpp_bits_per_byte"]
    assert row["mean"] == pytest.approx([3.1, 2.1]) and row["std"][0] == pytest.approx(0.1)
    assert row["better"] == "textbook" and row["difference"] == pytest.approx(-1.0)
    assert row["permutation_p"] == pytest.approx(0.1) and not row["significant"]


def test_finetune_phase_continues_from_the_pretrained_weights(tmp_path, phi_home):
    corpus = write_code_corpus(tmp_path / "src")
    exercises = tmp_path / "exercises.jsonl"
    exercises.write_text("".join(json.dumps({"text": f"def add_{i}(x):\n    return x + {i}\n"}) + "\n"
                                 for i in range(60)))
    path = tiny_recipe(tmp_path, corpus, "two-phase", data={"source": [str(corpus)], "val_fraction": 0.2}, finetune={
        "data": {"source": [str(exercises)], "val_fraction": 0.2},
        "training": {"seq_len": 32, "batch_size": 4, "max_steps": 3, "lr": 1e-4, "eval_every": 3,
                     "eval_batches": 1}})
    recipe = load_recipe(path)
    out = train(recipe, progress=False)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["pretrain"]["steps"] == 6 and summary["steps"] == 3
    assert summary["tokens_seen"] == 6 * 8 * 64 + 3 * 4 * 32
    assert load_recipe(out / "recipe.yaml").to_dict() == recipe.to_dict()  # the whole recipe, both phases
    assert (out / "pretrain" / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    finetune_data = json.loads((out / "data_manifest.json").read_text())
    assert finetune_data["source"] == [str(exercises)]
