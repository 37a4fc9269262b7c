"""GSM8K (Cobbe et al. 2021), test split: the data, and lm-eval's `gsm8k_cot` task.

`gsm8k_cot` is 8-shot chain of thought: the chain-of-thought paper's eight exemplars (Wei et al. 2022) as
"Q: ... A: ..." pairs, greedy decoding up to "Q:", 256 new tokens (lm-eval's HFLM default), then two
answer extractions ("strict-match": "The answer is N."; "flexible-extract": the last number) scored by
exact match after lm-eval's normalisation. Every constant here is lm-eval's `gsm8k-cot.yaml`'s;
tests/test_math_tasks.py checks them against that file and lm-eval's own filter and metric code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.jsonl import read_json_objects
from phi_eval.metrics import mean_metric
from phi_eval.tasks.base import Task, doc_hash, generation_record, per_doc_means, short_hash

HUB_DATASET = ("openai/gsm8k", "main")

# lm-eval's gsm8k-cot.yaml: fewshot_config.samples (first_n), in order.
COT_EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
     "were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8."),
)
STOP = ("Q:", "</s>", "<|im_end|>")
MAX_NEW_TOKENS = 256  # gsm8k-cot.yaml sets none: HFLM's max_gen_toks default

# filter_list: name -> (regex_pattern, group_select), each followed by take_first.
FILTERS = {
    "strict-match": (r"The answer is (\-?[0-9\.\,]+).", 0),
    "flexible-extract": (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
}
FALLBACK = "[invalid]"  # RegexFilter's default for "no match"
# metric_list's exact_match settings: these are removed from prediction and target, then both lower-cased.
REGEXES_TO_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")


def read_local(data_dir: Path) -> list[dict]:
    path = data_dir / "gsm8k" / "test.jsonl"
    if not path.exists():
        raise UsageError(f"GSM8K data not found at {path}; point --data-dir at a folder holding gsm8k/test.jsonl")
    return read_json_objects(path)


def read_hub() -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(*HUB_DATASET, split="test")
    except Exception as e:  # datasets raises many types for "no network" / "not cached"
        raise UsageError(f"cannot load GSM8K from the hub ({type(e).__name__}); pass --data-dir DIR with "
                         "gsm8k/test.jsonl (the layout of the project's shared benchmarks)") from None
    return [dict(row) for row in dataset]


def load_gsm8k(data_dir: Path | None) -> list[dict]:
    """The 1319 test problems with "doc_id" and "target" (the number after "####", as lm-eval's doc_to_target)."""
    rows = read_local(data_dir) if data_dir else read_hub()
    for row in rows:
        if not isinstance(row.get("question"), str) or "####" not in str(row.get("answer", "")):
            raise UsageError("GSM8K rows need a question and an answer ending in '#### N'; give the original "
                             "release file (openai/grade-school-math test.jsonl)")
    return [{**row, "doc_id": f"gsm8k/{i}", "target": row["answer"].split("####")[-1].strip()}
            for i, row in enumerate(rows)]


def regex_extract(text: str, pattern: str, group_select: int) -> str:
    """lm-eval's RegexFilter on one response: the selected match; with groups, its first non-empty one."""
    matches = re.findall(pattern, text)
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), FALLBACK)
    return match.strip()


def extract_answers(completion: str) -> dict[str, str]:
    return {name: regex_extract(completion, pattern, group) for name, (pattern, group) in FILTERS.items()}


def normalise(text: str) -> str:
    for pattern in REGEXES_TO_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, target: str) -> float:
    """lm-eval's exact_match with gsm8k-cot's regexes_to_ignore and ignore_case."""
    return float(normalise(prediction) == normalise(target))


@dataclass(frozen=True)
class GSM8KChainOfThought(Task):
    def load_docs(self, data_dir: Path | None) -> list[dict]:
        return load_gsm8k(data_dir)

    def prompt(self, doc: dict) -> str:
        shots = "".join(f"Q: {question}\nA: {answer}\n\n" for question, answer in COT_EXEMPLARS)
        return f"{shots}Q: {doc['question']}\nA:"

    def generation(self, ctx) -> dict:
        return ctx.generation_config(MAX_NEW_TOKENS, STOP).to_dict()

    def samples(self, model, docs: list[dict], ctx) -> list[dict]:
        from phi_eval.models import GenerationRequest

        config = ctx.generation_config(MAX_NEW_TOKENS, STOP)
        n = ctx.samples_per_doc(model, docs)
        requests = [GenerationRequest(self.prompt(doc), config, s, doc["doc_id"]) for doc in docs for s in range(n)]
        records = []
        for i, (request, completion) in enumerate(zip(requests, ctx.generate(model, requests))):
            doc = docs[i // n]
            extracted = extract_answers(completion["text"])
            records.append({
                **generation_record(doc, request, completion),
                "extracted": extracted,
                "target": doc["target"],
                "scores": {f"exact_match,{name}": exact_match(answer, doc["target"])
                           for name, answer in extracted.items()},
                "doc_hash": doc_hash(doc),
                "prompt_hash": short_hash(request.prompt),
                "target_hash": short_hash(doc["target"]),
            })
        return records

    def metrics(self, records: list[dict]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name in FILTERS:
            metrics.update(mean_metric(f"exact_match,{name}", per_doc_means(records, f"exact_match,{name}")))
        return metrics

    def config(self) -> dict:
        return {**super().config(),
                "dataset_path": HUB_DATASET[0], "dataset_name": HUB_DATASET[1], "test_split": "test",
                "doc_to_text": "Q: {{question}}\nA:", "target_delimiter": " ", "fewshot_delimiter": "\n\n",
                "generation_kwargs": {"until": list(STOP), "do_sample": False, "max_gen_toks": MAX_NEW_TOKENS},
                "filter_list": [{"name": name, "filter": [
                    {"function": "regex", "regex_pattern": pattern, "group_select": group},
                    {"function": "take_first"}]} for name, (pattern, group) in FILTERS.items()],
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                 "ignore_case": True, "ignore_punctuation": False,
                                 "regexes_to_ignore": list(REGEXES_TO_IGNORE)}]}


GSM8K_COT = GSM8KChainOfThought(
    name="gsm8k",
    version="3.0",  # lm-eval's gsm8k_cot version
    n_shot=8,
    description="GSM8K test split, lm-eval's gsm8k_cot: 8-shot chain of thought, strict and flexible extraction.",
)
