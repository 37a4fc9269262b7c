"""phi_eval.train: recipe validation and overrides, the corpus, the tokenizer, and a
short real training run on a corpus the test writes itself."""
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from phi_eval.errors import UsageError
from phi_eval.paths import PROJECT_ROOT
from phi_eval.train import load_recipe, train
from phi_eval.train.corpus import collect_corpus
from phi_eval.train.loop import lr_at
from phi_eval.train.recipe import DataSpec, TrainingSpec
from phi_eval.train.tokenizer import train_bpe

PHI_TINY = PROJECT_ROOT / "recipes" / "phi-tiny.yaml"

TINY_MODEL = {"layers": 2, "hidden_size": 32, "heads": 2, "rotary_dim": 8, "context_length": 64}


def write_recipe(tmp_path, **sections) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **sections}))
    return path


def write_code_corpus(root: Path, n_files: int = 24) -> Path:
    """Small, varied, valid Python: enough for a tokenizer and a loss that falls."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        body = "\n\n".join(
            textwrap.dedent(f'''\
            def {verb}_{noun}(items, limit={i + j}):
                """{verb.title()} the {noun} in items, at most limit of them."""
                result = []
                for index, item in enumerate(items):
                    if index >= limit:
                        break
                    result.append(item * {j + 1})
                return result
            ''')
            for j, (verb, noun) in enumerate(
                [("count", "values"), ("filter", "names"), ("sort", "rows"), ("merge", "keys")][i % 4:] * 2
            )
        )
        (root / f"module_{i}.py").write_text(f"import os\nimport sys\n\n\n{body}\n\nclass Box{i}:\n    size = {i}\n")
    return root


# --- recipe validation -------------------------------------------------------------

def error_of(path, overrides=()) -> str:
    with pytest.raises(UsageError) as e:
        load_recipe(path, overrides)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_phi_tiny_recipe_is_valid_and_phi_shaped():
    r = load_recipe(PHI_TINY)
    assert r.name == "phi-tiny"
    assert r.data.source == "stdlib"
    assert r.model.rotary_dim * 2 == r.model.head_dim  # phi-1 rotates half of each head
    assert r.model.mlp_size == 4 * r.model.hidden_size
    assert r.training.seq_len <= r.model.context_length


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message and "phi-tiny" in message


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"model": {"layers": "four"}}, "model.layers must be an integer (got 'four')"),
        ({"model": {"n_layer": 4}}, "model.n_layer is not a known key of model"),
        ({"trainig": {}}, "trainig is not a known key of the recipe"),
        ({"model": {"hidden_size": 64, "heads": 5}}, "model.heads must divide model.hidden_size (got 5 and 64)"),
        ({"model": {"hidden_size": 64, "heads": 4, "rotary_dim": 7}}, "model.rotary_dim must be even"),
        ({"training": {"max_steps": 5, "max_tokens": 100}}, "training.max_tokens and training.max_steps are both set"),
        ({"training": {"lr": 1e-3}}, "training.max_steps or training.max_tokens must be set"),
        ({"training": {"max_steps": 5, "lr": "fast"}}, "training.lr must be a number"),
        ({"training": {"max_steps": 5, "schedule": "step"}}, "training.schedule must be cosine, linear or constant"),
        ({"training": {"max_steps": 5, "seq_len": 4096}}, "training.seq_len must be at most model.context_length"),
        ({"training": {"max_steps": 5}, "tokenizer": {"path": "x", "train": {"vocab_size": 512}}},
         "tokenizer.path and tokenizer.train are both set"),
        ({"training": {"max_steps": 5}, "tokenizer": {}}, "tokenizer needs train: {vocab_size: N} or path"),
        ({"training": {"max_steps": 5}, "data": {"source": ["/no/such/dir"]}}, "data.source lists '/no/such/dir'"),
        ({"training": {"max_steps": 5}, "data": {"source": "everything"}}, "data.source must be 'stdlib' or a list"),
        ({"training": {"max_steps": 5}, "data": {"val_fraction": 1.5}}, "data.val_fraction must be between 0 and 1"),
        ({"training": {"max_steps": 5}, "model": "big"}, "model must be a section"),
    ],
)
def test_bad_recipes_name_the_field(tmp_path, sections, expected):
    sections.setdefault("tokenizer", {"train": {"vocab_size": 512}})
    message = error_of(write_recipe(tmp_path, **sections))
    assert message.startswith(str(tmp_path / "r.yaml") + ": ")
    assert expected in message
    assert message.endswith("fix the recipe")


def test_not_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: [unclosed\n")
    assert "not valid YAML at line" in error_of(path)


# --- overrides -----------------------------------------------------------------------

def test_overrides_apply_with_types(tmp_path):
    corpus = write_code_corpus(tmp_path / "src", n_files=2)
    path = write_recipe(tmp_path, tokenizer={"train": {"vocab_size": 512}}, training={"max_steps": 100})
    r = load_recipe(path, [
        "training.max_steps=10",
        "training.lr=3e-4",  # YAML alone would read this as a string
        "training.grad_clip=null",
        "model.dropout=0.1",
        f"data.source=[{corpus}]",
        "tokenizer.train.vocab_size=1024",
        "name=other",
    ])
    assert r.training.max_steps == 10 and isinstance(r.training.max_steps, int)
    assert r.training.lr == 3e-4 and isinstance(r.training.lr, float)
    assert r.training.grad_clip is None
    assert r.model.dropout == 0.1
    assert r.data.source == [str(corpus)]
    assert r.tokenizer.train.vocab_size == 1024
    assert r.name == "other"
    assert r.overrides[0] == "training.max_steps=10"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.max_steps=ten", "training.max_steps must be an integer (got 'ten'); fix the override 'training.max_steps=ten'"),
        ("training.max_step=10", "training.max_step is not a known key of training"),
        ("training.max_steps", "is not key=value"),
        ("model.heads=5", "model.heads must divide model.hidden_size (got 5 and 96); fix the override 'model.heads=5'"),
        ("name.first=x", "name is not a section"),
        ("training.max_tokens=100", "both set; set one of them to null; fix the override 'training.max_tokens=100'"),
    ],
)
def test_bad_overrides_name_the_override(override, expected):
    assert expected in error_of(PHI_TINY, [override])


def test_max_tokens_sets_the_step_count():
    assert TrainingSpec(seq_len=8, batch_size=2, max_tokens=33).total_steps == 3


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    tc = TrainingSpec(max_steps=10, lr=1.0, min_lr=0.1, warmup_steps=2, schedule="linear")
    lrs = [lr_at(step, tc, 10) for step in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    cosine = TrainingSpec(max_steps=10, lr=1.0, warmup_steps=0, schedule="cosine")
    assert lr_at(0, cosine, 10) == 1.0 and lr_at(9, cosine, 10) == pytest.approx(0.0)
    # When the time budget runs out first, the decay keeps pace with the clock instead.
    assert lr_at(4, tc, 10, time_used=1.0) == pytest.approx(0.1)
    assert lr_at(2, cosine, 10, time_used=0.5) == pytest.approx(0.5)


# --- corpus and tokenizer ---------------------------------------------------------------

def test_corpus_skips_test_dirs_and_splits_deterministically(tmp_path):
    root = write_code_corpus(tmp_path / "src", n_files=30)
    for skipped in ("test", "tests", "pkg/idle_test", "site-packages", ".hidden", "__pycache__"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "x.py").write_text("x = 1\n")
    (root / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (root / "table.py").write_text("# Autogenerated by a script; do not edit.\nTABLE = {1: 2}\n")
    data = DataSpec(source=[str(root)], val_fraction=0.2)
    first, second = collect_corpus(data), collect_corpus(data)
    assert first.manifest["files"] == 30
    assert first.manifest == second.manifest and first.val == second.val
    assert 0 < len(first.val) < 30 and len(first.val) + len(first.train) == 30
    assert collect_corpus(DataSpec(source=[str(root)], skip_generated=False)).manifest["files"] == 31
    capped = collect_corpus(DataSpec(source=[str(root)], max_bytes=5000))
    assert capped.manifest["bytes"] < first.manifest["bytes"]


def test_stdlib_corpus_leaves_out_the_test_suite():
    corpus = collect_corpus(DataSpec(source="stdlib"))
    assert corpus.manifest["files"] > 300
    assert corpus.manifest["bytes"] < 20_000_000  # CPython 3.11's Lib/test alone is ~19 MB
    assert 0 < len(corpus.val) < len(corpus.train) / 10


PYTHON_SOURCE = (
    "class A:\n"
    "\tdef f(self, x):\n"
    "\t\tif x:  # tab-indented\n"
    "\t\t\treturn x  .real\n"
    "        \n"
    "def g():\r\n"
    "    s = 'caf\u00e9 \u4e2d\u6587'   \n"
    "    return  {  'a' : [1,2 ,3]}\n"
    "\n\n\n"
)


def test_tokenizer_round_trips_python_source_exactly(tmp_path):
    texts = [write_code_corpus(tmp_path / "src", n_files=4).joinpath(f"module_{i}.py").read_text() for i in range(4)]
    tokenizer = train_bpe(texts, vocab_size=400, model_max_length=64)
    ids = tokenizer(PYTHON_SOURCE, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == PYTHON_SOURCE
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"

    # A prompt that ends at a space, newline or indent is a token prefix of its continuation.
    whole = tokenizer("def f(x):\n    return x\n", add_special_tokens=False)["input_ids"]
    for prompt in ("def ", "def f(x):\n", "def f(x):\n    "):
        assert whole[: len(tokenizer(prompt)["input_ids"])] == tokenizer(prompt)["input_ids"], prompt

    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    assert reloaded(PYTHON_SOURCE)["input_ids"] == ids  # no bos/eos added to prompts
    assert reloaded.decode(ids) == PYTHON_SOURCE


# --- a real (short) training run ----------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def private_home(tmp_path_factory):
    """Zoo cards and the measured matmul peak go to a home of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("phi-home")
        patch.setenv("PHI_EVAL_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, private_home):
    tmp = tmp_path_factory.mktemp("train")
    corpus = write_code_corpus(tmp / "src")
    recipe_path = write_recipe(
        tmp,
        model=TINY_MODEL,
        tokenizer={"train": {"vocab_size": 400}},
        training={"seq_len": 64, "batch_size": 8, "max_steps": 100, "lr": 1e-2, "warmup_steps": 3,
                  "eval_every": 10, "eval_batches": 2, "log_every": 5},
    )
    overrides = [f"data.source=[{corpus}]", "data.val_fraction=0.2", "training.max_steps=30"]
    recipe = load_recipe(recipe_path, overrides)
    out = train(recipe, out_dir=tmp / "ckpt", progress=False)
    return recipe, out


def test_training_writes_a_checkpoint_that_reloads_offline(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = tiny_run
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "phi"
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.5
    assert model.config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer("def count_values(", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    # What it learned shows: the corpus always continues this way.
    assert tokenizer.decode(generated[0]).startswith("def count_values(")


def test_training_summary_and_log(tiny_run):
    recipe, out = tiny_run
    summary = json.loads((out / "training_summary.json").read_text())
    for key in ("recipe", "recipe_sha256", "parameters", "tokens_seen", "train_loss_first", "train_loss_last",
                "val_loss_first", "val_loss_last", "wall_time_s", "tokens_per_s", "seed", "corpus", "versions"):
        assert key in summary, key
    assert summary["recipe"] == "t"
    assert summary["steps"] == 30 and summary["tokens_seen"] == 30 * 8 * 64
    assert summary["val_loss_last"] < summary["val_loss_first"] - 1
    assert summary["train_loss_last"] < summary["train_loss_first"] - 1
    assert {"torch", "transformers"} <= set(summary["versions"])
    for key in ("source", "files", "bytes", "tokens", "sha256"):
        assert key in summary["corpus"], key
    assert summary["corpus"]["files"] == 24

    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0] == {"step": 0, "tokens": 0, "val_loss": summary["val_loss_first"]}
    assert [r["step"] for r in log[1:]] == [1, 5, 10, 15, 20, 25, 30]
    assert all({"step", "tokens", "loss", "lr", "tokens_per_s"} <= set(r) for r in log[1:])
    assert [r["step"] for r in log if "val_loss" in r] == [0, 10, 20, 30]


def test_checkpoint_recipe_reloads_and_retrains_identically(tiny_run, tmp_path):
    recipe, out = tiny_run
    again = load_recipe(out / "recipe.yaml")
    assert again.to_dict() == recipe.to_dict()
    second = train(again, out_dir=tmp_path / "again", progress=False)
    losses = [json.loads(line).get("loss") for line in (out / "train_log.jsonl").read_text().splitlines()]
    repeat = [json.loads(line).get("loss") for line in (second / "train_log.jsonl").read_text().splitlines()]
    assert losses == repeat  # same seed, same numbers


def test_time_budget_stops_the_loop(tiny_run, tmp_path):
    recipe, _ = tiny_run
    quick = load_recipe(recipe.path, list(recipe.overrides) + ["training.max_steps=100000", "training.max_minutes=0.001"])
    out = train(quick, out_dir=tmp_path / "quick", progress=False)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["stopped_by"] == "max_minutes" and summary["steps"] < 100000


def test_corpus_smaller_than_a_sequence_is_a_usage_error(tmp_path):
    corpus = tmp_path / "src"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"m{i}.py").write_text(f"x = {i}\n")
    path = write_recipe(tmp_path, model=TINY_MODEL, tokenizer={"train": {"vocab_size": 300}},
                        data={"source": [str(corpus)]}, training={"seq_len": 64, "max_steps": 1})
    with pytest.raises(UsageError, match="fewer than training.seq_len"):
        train(load_recipe(path), out_dir=tmp_path / "out", progress=False)
