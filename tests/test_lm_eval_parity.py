"""phi-eval's log-likelihood scoring against lm-eval's HFLM on the same tiny model object."""
from __future__ import annotations

import pytest

from phi_eval.models.hf import HFModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lm_eval_hflm(model: HFModel, batch_size: int | str = 8):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model.model, tokenizer=model.tokenizer, backend="causal", batch_size=batch_size,
                device=str(model.device))


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> HFModel:
    """A 32-token context, so long texts roll over several windows."""
    from tiny import make_tiny_phi

    directory = make_tiny_phi(tmp_path_factory.mktemp("tiny-phi-32"), seed=3, context=32)
    return HFModel(str(directory), name="tiny-32", device="cpu", dtype="float32", batch_size=4)


def test_loglikelihood_rolling_matches_lm_eval(short_context_model):
    from lm_eval.api.instance import Instance

    texts = ["def f(x):\n    return x + 1\n",
             "a",
             " ".join(f"word{i}" for i in range(60)),  # many windows
             "import heapq\n" * 9 + "heapq.heappush(queue, item)"]
    ours = short_context_model.loglikelihood_rolling(texts, progress=False)
    requests = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    theirs = lm_eval_hflm(short_context_model, batch_size=4).loglikelihood_rolling(requests, disable_tqdm=True)
    assert len(short_context_model._encode(texts[2])) > 3 * short_context_model.max_length
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-4)
    assert all(value < 0 for value in ours)


def test_loglikelihood_rolling_step_caches(short_context_model, tmp_path):
    from phi_eval.cache import Cache
    from phi_eval.steps import loglikelihood_rolling_with_cache

    texts = ["hello world", "x = 1\ny = 2\n"]
    with_cache = Cache(tmp_path / "cache.sqlite")
    first = loglikelihood_rolling_with_cache(short_context_model, texts, with_cache, progress=False)
    assert first == short_context_model.loglikelihood_rolling(texts, progress=False)
    short_context_model.loglikelihood_rolling = None  # a second call must not reach the model
    try:
        assert loglikelihood_rolling_with_cache(short_context_model, texts, with_cache, progress=False) == first
    finally:
        del short_context_model.loglikelihood_rolling
    with_cache.close()


# -- multiple choice: phi-eval's tasks against lm-eval's own run (simple_evaluate with HFLM) -------------

ITEMS = 24  # per task (per subject for MMLU)


@pytest.fixture(scope="module")
def tiny_model(tiny_phi_dir) -> HFModel:
    return HFModel(str(tiny_phi_dir), name="tiny", device="cpu", dtype="float32", batch_size=8)


def lm_eval_samples(model: HFModel, lm_tasks: list, limit: int | None, num_fewshot: int | None = None) -> dict:
    """{lm-eval task name: its logged samples by doc_id} from lm-eval's simple_evaluate on the same model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=lm_eval_hflm(model), tasks=lm_tasks, limit=limit, num_fewshot=num_fewshot,
                          log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_defaults=False))
    return {name: {s["doc_id"]: s for s in samples} for name, samples in out["samples"].items()}


def phi_eval_records(model: HFModel, task, docs: list[dict], data_dir, tmp_path) -> list[dict]:
    from phi_eval.cache import NoCache
    from phi_eval.evaluate import RunOptions
    from phi_eval.steps import EvalContext

    ctx = EvalContext(RunOptions(out=tmp_path, data_dir=data_dir, progress=False), NoCache())
    return task.samples(model, docs, ctx)


def assert_same(ours: list[dict], theirs: dict[int, dict], doc_index, rel: float = 1e-6) -> None:
    # rel=1e-6: sums near -1000 in float32 differ by an ulp (~1e-4) with the summation order.
    assert len(ours) == len(theirs)
    for record in ours:
        sample = theirs[doc_index(record["doc_id"])]
        their_lls = [float(ll) for ll, _ in (r[0] for r in sample["resps"])]
        assert record["loglikelihoods"] == pytest.approx(their_lls, rel=rel, abs=1e-4)
        assert record["is_greedy"] == [bool(g) for _, g in (r[0] for r in sample["resps"])]
        assert record["prediction"] == int(max(range(len(their_lls)), key=their_lls.__getitem__))
        assert record["scores"] == {"acc": sample["acc"], "acc_norm": sample["acc_norm"]}
        contexts = [context for context, _ in sample["arguments"]]
        assert record["prompt"] in (contexts[0] if len(set(contexts)) == 1 else contexts, contexts)
        assert record["choices"] == [continuation for _, continuation in sample["arguments"]]


@pytest.mark.parametrize("name", ["winogrande", "arc_easy", "arc_challenge", "boolq", "siqa", "piqa", "hellaswag",
                                  "openbookqa"])
def test_multiple_choice_matches_lm_eval(name, tiny_model, tmp_path):
    from conftest import SHARED_BENCHMARKS
    from phi_eval.tasks import TASKS, local_data
    from phi_eval.tasks.multiple_choice import lm_eval_task

    if local_data.load_local(name, SHARED_BENCHMARKS) is None if SHARED_BENCHMARKS.is_dir() else True:
        pytest.skip("shared benchmarks absent")
    task = TASKS[name]
    docs = task.load_docs(SHARED_BENCHMARKS)[:ITEMS]
    ours = phi_eval_records(tiny_model, task, docs, SHARED_BENCHMARKS, tmp_path)
    # zero-shot, so lm-eval given the first ITEMS items builds the same requests as over the whole split
    splits = {split: rows[:ITEMS] for split, rows in local_data.load_local(name, SHARED_BENCHMARKS).items()}
    theirs = lm_eval_samples(tiny_model, [lm_eval_task(task.lm_eval_name, splits)], limit=ITEMS)
    assert_same(ours, theirs[task.lm_eval_name], int)
    metrics = task.metrics(ours)
    assert set(metrics) == {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"}


@pytest.mark.parametrize("num_fewshot", [2, 0])
def test_mmlu_matches_lm_eval(num_fewshot, tiny_model, tmp_path, monkeypatch):
    """MMLU from a hub-schema fixture (cais/mmlu "all"): per subject, lm-eval's mmlu_<subject> task with the
    same shots from the dev split."""
    from dataclasses import replace

    from test_multiple_choice import MMLU_SUBJECTS, mmlu_hub_rows

    from phi_eval.tasks import TASKS, local_data, multiple_choice
    from phi_eval.tasks.multiple_choice import lm_eval_task

    monkeypatch.setattr(local_data, "load_hub", lambda path, name: mmlu_hub_rows())
    multiple_choice.build_subtasks.cache_clear()
    task = replace(TASKS["mmlu"], n_shot=num_fewshot)
    ours = phi_eval_records(tiny_model, task, task.load_docs(None), None, tmp_path)
    multiple_choice.build_subtasks.cache_clear()
    rows = mmlu_hub_rows()
    lm_tasks = [lm_eval_task(f"mmlu_{subject}", {split: [r for r in rows[split] if r["subject"] == subject]
                                                  for split in ("test", "dev")}) for subject in MMLU_SUBJECTS]
    theirs = lm_eval_samples(tiny_model, lm_tasks, limit=None, num_fewshot=num_fewshot)
    for subject in MMLU_SUBJECTS:
        records = [r for r in ours if r["doc_id"].startswith(f"{subject}/")]
        assert_same(records, theirs[f"mmlu_{subject}"], lambda doc_id: int(doc_id.split("/")[1]))
        assert records[0]["prompt"].count("Answer:") == num_fewshot + 1


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory) -> HFModel:
    """A tiny Llama whose tokenizer adds <s> to every text, as Llama's does: lm-eval scores with it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tiny import train_tokenizer

    base = train_tokenizer(400).backend_tokenizer
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator([base.decode(list(range(300)))] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=48, bos_token_id=0, eos_token_id=1)
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    fast.save_pretrained(directory)
    return HFModel(str(directory), name="tiny-llama", device="cpu", dtype="float32", batch_size=4)


def test_loglikelihood_with_a_bos_adding_tokenizer_matches_lm_eval(bos_model):
    from lm_eval.api.instance import Instance

    pairs = [("The cat", " sat on the mat"), ("The cat", " ran"), ("", "hello there"), ("<s>The dog", " barked"),
             ("word " * 30, "end")]
    texts = ["the cat sat on the mat " * 6, "x"]
    lm = lm_eval_hflm(bos_model, batch_size=4)
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                              disable_tqdm=True)
    ours = bos_model.loglikelihood(pairs, progress=False)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in theirs], rel=1e-6, abs=1e-4)
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                      disable_tqdm=True)
    assert bos_model.loglikelihood_rolling(texts, progress=False) == pytest.approx(theirs, rel=1e-6, abs=1e-4)


def test_random_fewshot_matches_lm_eval_whichever_docs_are_scored(tiny_model, tmp_path, monkeypatch):
    """--num-fewshot 3 on ARC-Easy from a hub-schema fixture with a train split: lm-eval's random sampler
    (seed 1234) draws per doc in order, so scoring doc 7 alone must give it the shots it gets in a full run."""
    from dataclasses import replace

    from phi_eval.tasks import TASKS, local_data, multiple_choice
    from phi_eval.tasks.multiple_choice import lm_eval_task

    def rows(split: str, count: int) -> list[dict]:
        return [{"id": f"{split}-{i}", "question": f"Which {split} thing {i} is heavy?",
                 "choices": {"text": ["a rock", "a feather", f"thing {i}"], "label": ["A", "B", "C"]},
                 "answerKey": "ABC"[i % 3]} for i in range(count)]

    splits = {"train": rows("train", 20), "validation": rows("validation", 4), "test": rows("test", 10)}
    monkeypatch.setattr(local_data, "load_hub", lambda path, name: splits)
    multiple_choice.build_subtasks.cache_clear()
    task = replace(TASKS["arc_easy"], n_shot=3)
    docs = task.load_docs(None)
    ours = phi_eval_records(tiny_model, task, docs, None, tmp_path)
    alone = phi_eval_records(tiny_model, task, docs[7:8], None, tmp_path)
    multiple_choice.build_subtasks.cache_clear()
    theirs = lm_eval_samples(tiny_model, [lm_eval_task("arc_easy", splits)], limit=None, num_fewshot=3)
    assert_same(ours, theirs["arc_easy"], int)
    assert alone[0]["prompt"] == ours[7]["prompt"] and ours[7]["prompt"].count("Answer:") == 4
    assert len({r["prompt"].split("Which test")[0] for r in ours}) > 1  # the shots differ between docs
