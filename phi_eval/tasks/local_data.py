"""Benchmark release files (laid out like the project's shared/benchmarks) converted to the hub schema
lm-eval's task configs read, so lm-eval's own prompts, choices and targets apply to them unchanged.

Each converter returns {split name of lm-eval's config: rows}. Where a release file is a reformatted
copy, its docstring says what was lost and whether lm-eval's prompt can still be rebuilt exactly.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from phi_eval.errors import UsageError
from phi_eval.textfiles import read_text
from phi_eval.jsonl import read_json_objects


def read_labels(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def aligned(rows: list[dict], labels: list[str], name: str) -> list[tuple[dict, str]]:
    if len(rows) != len(labels):
        raise UsageError(f"{name}: {len(rows)} items but {len(labels)} labels; give the release's matching files")
    return list(zip(rows, labels))


def winogrande(root: Path) -> dict[str, list[dict]]:
    """winogrande_1.1 dev.jsonl + dev-labels.lst: the hub's winogrande_xl validation split, field for field."""
    rows = read_json_objects(root / "winogrande" / "dev.jsonl")
    labels = read_labels(root / "winogrande" / "dev-labels.lst")
    return {"validation": [{"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"],
                            "answer": label} for r, label in aligned(rows, labels, "winogrande")]}


def piqa(root: Path) -> dict[str, list[dict]]:
    """PIQA valid.jsonl + valid-labels.lst: the hub's validation split, field for field."""
    rows = read_json_objects(root / "piqa" / "valid.jsonl")
    labels = read_labels(root / "piqa" / "valid-labels.lst")
    return {"validation": [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(label)}
                           for r, label in aligned(rows, labels, "piqa")]}


def siqa(root: Path) -> dict[str, list[dict]]:
    """Social IQa dev.jsonl + dev-labels.lst ("1"/"2"/"3"): the hub's validation split, field for field."""
    rows = read_json_objects(root / "siqa" / "dev.jsonl")
    labels = read_labels(root / "siqa" / "dev-labels.lst")
    return {"validation": [{"context": r["context"], "question": r["question"], "answerA": r["answerA"],
                            "answerB": r["answerB"], "answerC": r["answerC"], "label": label}
                           for r, label in aligned(rows, labels, "siqa")]}


def hellaswag(root: Path) -> dict[str, list[dict]]:
    """llama.cpp's hellaswag_val_full.txt (6 lines per item: "<activity_label>: <ctx>", label, 4 endings),
    already passed through lm-eval's `preprocess`, which is idempotent on its output.

    Lost: the ctx_a / ctx_b split. lm-eval capitalises ctx_b ("...on a roof. He"), the file keeps it as
    in `ctx` ("...on a roof. he"), so for items whose ctx_b starts lower-case the query differs from
    lm-eval-on-the-hub by that one letter. Endings and labels are exact. The query is handed to
    lm-eval's own process_docs as activity_label + ctx_a with an empty ctx_b.
    """
    lines = read_text(root / "hellaswag" / "hellaswag_val_full.txt").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise UsageError(f"{root / 'hellaswag' / 'hellaswag_val_full.txt'}: expected 6 lines per item")
    rows = []
    for start in range(0, len(lines), 6):
        query, label, *endings = lines[start:start + 6]
        activity_label, _, context = query.partition(": ")
        rows.append({"ind": start // 6, "activity_label": activity_label, "ctx_a": context, "ctx_b": "",
                     "ctx": context, "endings": endings, "source_id": "", "split": "val", "split_type": "",
                     "label": label})
    return {"validation": rows}


def llm_foundry_choices(name: str, path: Path, question_prefix: str = "") -> dict[str, list[dict]]:
    """llm-foundry's {query, choices, gold} files as the hub's {question(_stem), choices{text,label}, answerKey}.

    Lost: item ids and the original answer-key letters; choices are relabelled A, B, C, ... in order.
    The question text is exact (llm-foundry only prefixed "Question: " for ARC), so lm-eval's prompt
    "Question: {{question}}\\nAnswer:" (ARC) or "{{question_stem}}" (OpenBookQA) is rebuilt exactly. ARC's
    release has 3- and 5-choice items; llm-foundry's copy has 4 choices everywhere, so such items (a few
    percent) cannot be restored to the original."""
    rows = []
    for index, r in enumerate(read_json_objects(path)):
        query = r["query"]
        if question_prefix:
            if not query.startswith(question_prefix):
                raise UsageError(f"{path}: item {index} does not start with {question_prefix!r}; "
                                 "give llm-foundry's file unchanged")
            query = query[len(question_prefix):]
        labels = [chr(ord("A") + i) for i in range(len(r["choices"]))]
        rows.append({"id": f"{name}/{index}", "question" if question_prefix else "question_stem": query,
                     "choices": {"text": list(r["choices"]), "label": labels}, "answerKey": labels[r["gold"]]})
    return {"test": rows}


def arc(root: Path, level: str) -> dict[str, list[dict]]:
    return llm_foundry_choices(f"arc_{level}", root / "arc" / f"arc_{level}.jsonl", "Question: ")


def openbookqa(root: Path) -> dict[str, list[dict]]:
    return llm_foundry_choices("openbookqa", root / "openbookqa" / "openbook_qa.jsonl")


def boolq(root: Path) -> dict[str, list[dict]]:
    """llm-foundry's BoolQ dev ({"query": "Passage: P\\nQuestion: Q?", "choices": ["no", "yes"], "gold"}) as
    SuperGLUE's {passage, question, label}.

    Lost: SuperGLUE's passage starts with the Wikipedia title ("Ethanol fuel -- All biomass ..."), which
    llm-foundry dropped, so lm-eval's prompt "{{passage}}\\nQuestion: {{question}}?\\nAnswer:" differs from
    lm-eval-on-the-hub by that title prefix. The question's "?" that llm-foundry appended is removed (lm-eval
    adds its own); question text and labels are exact."""
    rows = []
    path = root / "boolq" / "boolq.jsonl"
    for index, r in enumerate(read_json_objects(path)):
        passage, separator, question = r["query"].rpartition("\nQuestion: ")
        if not separator or not passage.startswith("Passage: "):
            raise UsageError(f"{path}: item {index} is not 'Passage: ...\\nQuestion: ...'; give llm-foundry's file")
        rows.append({"question": question.removesuffix("?"), "passage": passage[len("Passage: "):],
                     "idx": index, "label": int(r["gold"])})
    return {"validation": rows}


# phi-eval task -> (files that must exist under the data dir, converter)
CONVERTERS = {
    "winogrande": (("winogrande/dev.jsonl", "winogrande/dev-labels.lst"), winogrande),
    "piqa": (("piqa/valid.jsonl", "piqa/valid-labels.lst"), piqa),
    "siqa": (("siqa/dev.jsonl", "siqa/dev-labels.lst"), siqa),
    "hellaswag": (("hellaswag/hellaswag_val_full.txt",), hellaswag),
    "arc_easy": (("arc/arc_easy.jsonl",), lambda root: arc(root, "easy")),
    "arc_challenge": (("arc/arc_challenge.jsonl",), lambda root: arc(root, "challenge")),
    "boolq": (("boolq/boolq.jsonl",), boolq),
    "openbookqa": (("openbookqa/openbook_qa.jsonl",), openbookqa),
}


def load_local(task: str, data_dir: Path) -> dict[str, list[dict]] | None:
    """The task's rows from the data dir, or None when it holds no copy of that benchmark."""
    if task not in CONVERTERS:
        return None
    files, convert = CONVERTERS[task]
    present = [(data_dir / f).exists() for f in files]
    if not any(present):
        return None
    if not all(present):
        missing = [f for f, ok in zip(files, present) if not ok]
        raise UsageError(f"{task}: {data_dir} lacks {', '.join(missing)}; give the release's files together")
    return convert(data_dir)


def mmlu(data_dir: Path) -> dict[str, list[dict]] | None:
    """MMLU's original release (Hendrycks et al.'s data.tar: mmlu/test/<subject>_test.csv and
    mmlu/dev/<subject>_dev.csv; rows question, A, B, C, D, answer letter, no header) in cais/mmlu's
    schema; None when the data dir holds no copy."""
    root = data_dir / "mmlu"
    if not (root / "test").is_dir():
        return None
    splits: dict[str, list[dict]] = {}
    for split in ("test", "dev"):
        for path in sorted((root / split).glob(f"*_{split}.csv")):
            subject = path.name[: -len(f"_{split}.csv")]
            for index, row in enumerate(csv.reader(io.StringIO(read_text(path), newline=""))):
                if len(row) != 6 or row[5] not in "ABCD":
                    raise UsageError(f"{path}: row {index + 1} is not question, A, B, C, D, answer letter")
                splits.setdefault(split, []).append({"question": row[0], "subject": subject,
                                                     "choices": row[1:5], "answer": "ABCD".index(row[5])})
    return splits


def local_files(task: str) -> tuple[str, ...]:
    """The release files a data dir needs for a task."""
    return ("mmlu/test/*_test.csv", "mmlu/dev/*_dev.csv") if task == "mmlu" else CONVERTERS[task][0]


def load_hub(path: str, name: str | None) -> dict[str, list[dict]]:
    """All splits of a hub dataset through `datasets` (its local cache when offline)."""
    import datasets

    try:
        dataset = datasets.load_dataset(path, name)
    except Exception as e:  # datasets raises many types for "no network" / "not cached"
        raise UsageError(f"cannot load {path} from the hub ({type(e).__name__}); pass --data-dir DIR laid out "
                         "like the project's shared benchmarks") from None
    return {split: [dict(row) for row in rows] for split, rows in dataset.items()}
