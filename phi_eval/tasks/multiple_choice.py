"""Multiple-choice suites scored by log-likelihood with lm-eval's own task definitions.

Each task is lm-eval's ConfigurableTask built from lm-eval's YAML (prompt template, choices, target,
target delimiter, few-shot sampler, process_docs), with only the dataset swapped: the release files of
--data-dir converted to the hub schema (phi_eval.tasks.local_data), else the hub through `datasets`.
Requests come from lm-eval's fewshot_context / construct_requests and per-item metrics from its
process_results, so acc (argmax of summed log-likelihoods) and acc_norm (argmax of log-likelihood over
the choice's length in characters) mean exactly what they mean in lm-eval. Only the scoring of the
(context, continuation) pairs is phi-eval's: cached, batched, contexts shared (HFModel.loglikelihood).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phi_eval.errors import UsageError
from phi_eval.metrics import mean_metric
from phi_eval.tasks import local_data
from phi_eval.tasks.base import Task, doc_hash, per_doc_means, short_hash

METRICS = ("acc", "acc_norm")
# Every task reports both; lm-eval's YAML for boolq, siqa and winogrande lists acc only.
METRIC_LIST = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS]
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
LM_EVAL_DIRS = ("arc", "hellaswag", "winogrande", "piqa", "siqa", "openbookqa", "super_glue/boolq", "mmlu/default")


@functools.lru_cache(maxsize=1)
def task_index() -> dict:
    """lm-eval's index of the task configs these suites use (only their folders are scanned)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    return TaskManager(include_defaults=False, include_path=[str(root / d) for d in LM_EVAL_DIRS]).task_index


def lm_eval_task(lm_eval_name: str, splits: dict[str, list[dict]]):
    """lm-eval's ConfigurableTask for `lm_eval_name` over the given splits (the hub schema), reporting acc and
    acc_norm. Splits the data lacks are unset in the config, so lm-eval never looks for them."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(task_index()[lm_eval_name].yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if config.get(key) and config[key] not in splits:
            config[key] = None
    dataset = datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})
    config.update(metric_list=METRIC_LIST, custom_dataset=lambda **_: dataset)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notes on stderr say nothing to users
    return ConfigurableTask(config=config)


@dataclass(frozen=True)
class MultipleChoiceTask(Task):
    """One lm-eval task; `hub` is (dataset path, config name) of the hub copy lm-eval's YAML names."""

    lm_eval_name: str = ""
    hub: tuple[str, str | None] = ("", None)

    output_type = "multiple_choice"
    accepts_num_fewshot = True

    def subtasks(self, data_dir: Path | None) -> dict[str, tuple[object, list[dict]]]:
        """{doc_id prefix: (lm-eval task, its eval docs)}; one entry except for MMLU's subjects."""
        return build_subtasks(self, data_dir)

    def missing_local_data(self, data_dir: Path) -> str | None:
        files = local_data.local_files(self.name)
        if all(any(data_dir.glob(pattern)) for pattern in files):
            return None
        return f"no {', '.join(files)} in {data_dir} (name {self.name} alone in --tasks to load it from the hub)"

    def load_docs(self, data_dir: Path | None) -> list[dict]:
        return [{**doc, "doc_id": f"{prefix}{index}"}
                for prefix, (_, eval_docs) in self.subtasks(data_dir).items() for index, doc in enumerate(eval_docs)]

    def samples(self, model, docs: list[dict], ctx) -> list[dict]:
        requests = self.requests(docs, ctx.options.data_dir)
        pairs = [pair for _, _, arguments in requests for pair in arguments]
        scores = ctx.loglikelihood(model, pairs)
        records, start = [], 0
        for doc, (task, lm_doc, arguments) in zip(docs, requests):
            results = scores[start:start + len(arguments)]
            start += len(arguments)
            records.append(self.record(doc, task, lm_doc, arguments, results))
        return records

    def requests(self, docs: list[dict], data_dir: Path | None) -> list[tuple[object, dict, list[tuple[str, str]]]]:
        """(lm-eval task, lm-eval doc, [(context, continuation) per choice]) per doc, as lm-eval builds them.
        Random few-shot samplers draw in doc order from a fixed seed, so every doc's context is built after
        those of all earlier docs of its subtask, whichever docs this run scores."""
        from lm_eval.api.samplers import FirstNSampler

        subtasks = self.subtasks(data_dir)
        wanted: dict[str, dict[int, None]] = {}
        for doc in docs:
            prefix, index = split_doc_id(doc["doc_id"], subtasks)
            wanted.setdefault(prefix, {})[index] = None
        built = {}
        for prefix, indices in wanted.items():
            task, eval_docs = subtasks[prefix]
            if self.n_shot:
                self.check_fewshot(task)
            task.set_fewshot_seed(FEWSHOT_SEED)
            random_draws = self.n_shot and not isinstance(getattr(task, "sampler", None), FirstNSampler)
            for index in range(max(indices) + 1) if random_draws else sorted(indices):
                lm_doc = eval_docs[index]
                context = task.fewshot_context(lm_doc, num_fewshot=self.n_shot, gen_prefix=task.doc_to_prefix(lm_doc))
                if index in indices:
                    instances = task.construct_requests(doc=lm_doc, ctx=context, metadata=(self.name, index, 1))
                    built[f"{prefix}{index}"] = (task, lm_doc, [tuple(i.args) for i in instances])
        return [built[doc["doc_id"]] for doc in docs]

    def check_fewshot(self, task) -> None:
        if task.config.fewshot_split is None and task.config.training_split is None:
            raise UsageError(f"{self.name}: lm-eval draws few-shot examples from the train split, which the local "
                             "data lacks; use --num-fewshot 0 or the hub copy (no --data-dir)")

    def record(self, doc: dict, task, lm_doc: dict, arguments: list[tuple[str, str]],
               results: list[tuple[float, bool]]) -> dict:
        metrics = task.process_results(lm_doc, [tuple(r) for r in results])
        loglikelihoods = [float(r[0]) for r in results]
        gold = task.doc_to_text(lm_doc) if task.multiple_input else task.doc_to_target(lm_doc)
        choices = task.doc_to_choice(lm_doc)
        if isinstance(gold, str):
            gold = choices.index(gold)
        contexts = list(dict.fromkeys(context for context, _ in arguments))
        return {
            "doc_id": doc["doc_id"],
            "prompt": contexts[0] if len(contexts) == 1 else contexts,
            "choices": [continuation for _, continuation in arguments],
            "loglikelihoods": loglikelihoods,
            "is_greedy": [bool(r[1]) for r in results],
            "prediction": int(np.argmax(loglikelihoods)),
            "prediction_norm": int(np.argmax(np.array(loglikelihoods) / [len(c) for c in choices])),
            "gold": int(gold),
            "scores": {m: float(metrics[m]) for m in METRICS},
            "doc_hash": doc_hash(lm_doc),
            "prompt_hash": short_hash("\x00".join(contexts)),
            "target_hash": short_hash(str(gold)),
        }

    def metrics(self, records: list[dict]) -> dict[str, float]:
        return {key: value for metric in METRICS
                for key, value in mean_metric(f"{metric},none", per_doc_means(records, metric)).items()}

    def config(self) -> dict:
        return {**super().config(), "lm_eval_task": self.lm_eval_name, "dataset_path": self.hub[0],
                "dataset_name": self.hub[1],
                "metric_list": [dict(m) for m in METRIC_LIST]}


def split_doc_id(doc_id: str, subtasks: dict) -> tuple[str, int]:
    for prefix in subtasks:
        rest = doc_id[len(prefix):]
        if doc_id.startswith(prefix) and rest.isdigit():
            return prefix, int(rest)
    raise UsageError(f"doc id {doc_id!r} is not one of this task's items")


@functools.lru_cache(maxsize=32)
def build_subtasks(task: MultipleChoiceTask, data_dir: Path | None) -> dict[str, tuple[object, list[dict]]]:
    if task.name == "mmlu":
        subtasks = mmlu_subtasks(task, data_dir)
    else:
        splits = local_data.load_local(task.name, data_dir) if data_dir else None
        if splits is None:
            splits = local_data.load_hub(*task.hub)
        subtasks = {"": lm_eval_task(task.lm_eval_name, splits)}
    # task_docs: the eval docs lm-eval processed when it built the task (eval_docs would map them again)
    return {prefix: (lm_task, list(lm_task.task_docs)) for prefix, lm_task in subtasks.items()}


def mmlu_subtasks(task: MultipleChoiceTask, data_dir: Path | None) -> dict[str, object]:
    """The 57 subjects (lm-eval's mmlu_<subject> tasks: the subject's description, 5 dev-split shots by
    default, first n), in alphabetical order, from the release's CSV files or one load of the hub's "all" config."""
    splits = (local_data.mmlu(data_dir) if data_dir else None) or local_data.load_hub(*task.hub)
    by_subject: dict[str, dict[str, list[dict]]] = {}
    for split in ("test", "dev"):
        for row in splits.get(split, []):
            by_subject.setdefault(row["subject"], {}).setdefault(split, []).append(row)
    index = task_index()
    subjects = sorted(s for s, parts in by_subject.items() if "test" in parts and f"mmlu_{s}" in index)
    if not subjects:
        raise UsageError(f"{task.hub[0]} has no test items of any MMLU subject lm-eval knows")
    return {f"{subject}/": lm_eval_task(f"mmlu_{subject}", by_subject[subject]) for subject in subjects}


def make(name: str, lm_eval_name: str, hub: tuple[str, str | None], description: str, n_shot: int = 0):
    return MultipleChoiceTask(name=name, version="1.0", n_shot=n_shot, description=description,
                              lm_eval_name=lm_eval_name, hub=hub)


MULTIPLE_CHOICE_TASKS = (
    make("winogrande", "winogrande", ("allenai/winogrande", "winogrande_xl"),
         "WinoGrande (Sakaguchi et al. 2019) dev, lm-eval's partial scoring: the option fills the blank in the "
         "context, the rest of the sentence is scored."),
    make("arc_easy", "arc_easy", ("allenai/ai2_arc", "ARC-Easy"), "ARC-Easy (Clark et al. 2018) test."),
    make("arc_challenge", "arc_challenge", ("allenai/ai2_arc", "ARC-Challenge"),
         "ARC-Challenge (Clark et al. 2018) test."),
    make("boolq", "boolq", ("aps/super_glue", "boolq"), "BoolQ (Clark et al. 2019) dev, yes/no."),
    make("siqa", "social_iqa", ("lighteval/siqa", None), "Social IQa (Sap et al. 2019) dev."),
    make("piqa", "piqa", ("baber/piqa", None), "PIQA (Bisk et al. 2020) validation."),
    make("hellaswag", "hellaswag", ("Rowan/hellaswag", None), "HellaSwag (Zellers et al. 2019) validation."),
    make("openbookqa", "openbookqa", ("allenai/openbookqa", "main"), "OpenBookQA (Mihaylov et al. 2018) test."),
    make("mmlu", "mmlu", ("cais/mmlu", "all"),
         "MMLU (Hendrycks et al. 2021) test, all 57 subjects, 2-shot (phi-1.5's setting) from each dev split.",
         n_shot=2),
)
