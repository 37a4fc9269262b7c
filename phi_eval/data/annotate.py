"""The `annotate` stage: grade documents' educational value, 0-10 (phi-1, Section 2.1).

`annotator: llm` asks an OpenAI-compatible model phi-1's question, "determine its educational
value for a student whose goal is to learn basic coding concepts", for a seeded sample of the
corpus (`sample_size` or `sample_fraction`; phi-1 graded ~100k samples with GPT-4 and let a
classifier do the rest) and parses the grade robustly ("7", "Score: 7/10", "**8**", "seven";
anything else is recorded as unparsable, score null). `annotator: heuristic` is the offline
baseline of phi_eval.data.heuristic, named as such in every record. `annotator: file` replays
grades recorded earlier (`grades_file`: JSONL of {"sha256" of the text, "edu_score",
"edu_annotator"}, e.g. a teacher's grades committed with a study, see phi_eval.data.teacher),
matched to documents by the hash of their text, so a study reruns without its teacher.
Small local teachers: `completion_template` wraps the prompt for the completions API (the
model's chat template with the answer begun), and `score: expected` grades by the mean grade
under the model's distribution over its first answer tokens (logprobs), for a model whose
greedy answer is the same for every document.

Every document is written out; the graded ones gain `edu_score` (a number or null),
`edu_annotator` and, for the LLM, `edu_answer` (the raw reply, cut at 200 characters).
The manifest holds the score histogram, unparsable and failed counts, and the usage and cost.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tqdm.auto import tqdm

from phi_eval.data import llm
from phi_eval.data.heuristic import NAME as HEURISTIC, heuristic_score
from phi_eval.data.stage import Field, StageRun, jsonl_input, label, read_documents, run_stage
from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects

PROMPT_VERSION = 1
PROMPT = """Below is a document from a corpus used to train a language model on code.

--- begin document ---
{text}
--- end document ---

Determine its educational value for a student whose goal is to learn basic coding concepts.
Rate it from 0 (no educational value: boilerplate, configuration, generated data, or code that
cannot be understood on its own) to 10 (clear, self-contained and instructive, like a good
textbook example). Answer with the score only, a single integer from 0 to 10."""

FIELDS = {
    "annotator": Field("choice", "llm", choices=("llm", "heuristic", "file"),
                       help="llm: an OpenAI-compatible model; heuristic: the offline baseline; file: grades_file"),
    "grades_file": Field("str", help="with annotator file: JSONL of earlier grades (sha256 of the text, edu_score, "
                         "edu_annotator)"),
    "sample_size": Field("int", minimum=1, help="grade this many documents, a seeded sample (default: all)"),
    "sample_fraction": Field("fraction", help="grade this fraction of the documents, a seeded sample"),
    "seed": Field("int", 0, help="seed of the sample"),
    "max_chars": Field("int", 6000, minimum=100, help="document characters shown to the model"),
    "max_tokens": Field("int", 16, minimum=1, help="tokens the model may answer with"),
    "temperature": Field("number", 0.0, minimum=0),
    "score": Field("choice", "answer", choices=("answer", "expected"),
                   help="answer: the grade in the reply; expected: the probability-weighted mean grade from the "
                   "answer's first tokens' logprobs (api completions, the template ending where the number starts), "
                   "which still ranks documents when a small model gives every one the same grade"),
    "completion_template": Field("str", help="with api completions: the text sent, {prompt} standing for the grading "
                                 "prompt; e.g. the model's chat template ending in 'Score (0-10):', so that a small "
                                 "model answers with the number rather than prose"),
    **llm.FIELDS,
}

WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
PATTERNS = [
    re.compile(r"(?:score|rating|grade|value)\s*(?:is|of|:|=)?\s*\**\s*(\d+(?:\.\d+)?)\s*\**\s*(?:/\s*10\b|out of 10)?",
               re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*10\b|out of 10)", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\b"),
    re.compile(r"\b(\d+(?:\.\d+)?)\b"),
]


def parse_score(answer: str | None) -> float | None:
    """The 0-10 grade in a model's reply, or None when there is none."""
    if not answer:
        return None
    for pattern in PATTERNS:
        match = pattern.search(answer)
        if match:
            value = float(match.group(1))
            return value if 0 <= value <= 10 else None
    words = re.findall(r"[a-z]+", answer.lower())
    return next((float(WORDS[w]) for w in words if w in WORDS), None)


TOP_LOGPROBS = 20


def expected_grade(logprobs: dict | None) -> float | None:
    """The mean grade under the model's distribution over its first answer token (digits 0-9, or a
    whole grade 0-10 where the tokenizer has one), renormalised over those tokens. With one-digit
    tokens "1" starts both 1 and 10: when the answer's first token is "1", P("0" | "1") from the
    second token splits it; otherwise "1" counts as 1. None when no grade token is among the top."""
    import math

    if not logprobs or not logprobs.get("top"):
        return None
    weights: dict[int, float] = {}
    for token, logprob in logprobs["top"][0].items():
        text = token.strip()
        if text.isdigit() and int(text) <= 10:
            weights[int(text)] = weights.get(int(text), 0.0) + math.exp(logprob)
    tokens = logprobs.get("tokens") or []
    if 1 in weights and tokens and tokens[0].strip() == "1" and len(logprobs["top"]) > 1:
        ten = math.exp(logprobs["top"][1].get("0", -math.inf))
        weights[10] = weights.get(10, 0.0) + weights[1] * ten
        weights[1] *= 1 - ten
    total = sum(weights.values())
    return round(sum(g * w for g, w in weights.items()) / total, 4) if total else None


def sampled(ids: list[str], settings: dict) -> set[int]:
    """Indexes of the documents to grade: the lowest seeded hashes of their ids (order-independent)."""
    count = len(ids)
    if settings["sample_size"] is not None:
        count = min(count, settings["sample_size"])
    elif settings["sample_fraction"] is not None:
        count = round(count * settings["sample_fraction"])
    rank = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{settings['seed']}:{ids[i]}:{i}".encode()).digest())
    return set(rank[:count])


def check(settings: dict, where: str = "--") -> None:
    if settings["sample_size"] is not None and settings["sample_fraction"] is not None:
        raise UsageError(f"{label(where, 'sample_fraction')}: give sample_size or sample_fraction, not both")
    if settings["annotator"] == "llm" and not settings["model"]:
        raise UsageError(f"{label(where, 'model')}: required when annotator is llm (or set annotator: heuristic)")
    template = settings["completion_template"]
    if settings["score"] == "expected" and settings["api"] != "completions":
        raise UsageError(f"{label(where, 'score')}: expected needs api completions (for logprobs)")
    if template is not None and ("{prompt}" not in template or settings["api"] != "completions"):
        raise UsageError(f"{label(where, 'completion_template')}: needs api completions and a {{prompt}} placeholder")
    if settings["annotator"] == "file" and not settings["grades_file"]:
        raise UsageError(f"{label(where, 'grades_file')}: required when annotator is file")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def recorded_grades(path: Path) -> dict[str, dict]:
    """sha256 of a text -> its recorded grade fields."""
    grades = {}
    for where, record in json_objects(Path(path)):
        if record is None or not isinstance(record.get("sha256"), str) or "edu_score" not in record:
            raise UsageError(f"{where} is not a JSON object with \"sha256\" and \"edu_score\"; grades_file takes "
                             "the grades.jsonl that phi_eval.data.teacher writes")
        grades[record["sha256"]] = {"edu_score": record["edu_score"],
                                    "edu_annotator": record.get("edu_annotator", f"file:{Path(path).name}")}
    return grades


def run_annotate(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    check(settings)
    inputs = [jsonl_input(input_path)]
    if settings["annotator"] == "file":
        inputs.append(jsonl_input(Path(settings["grades_file"])))

    def body(run: StageRun) -> dict:
        ids = [str(d.get("id", i)) for i, d in enumerate(read_documents(input_path))]
        chosen = sampled(ids, settings)
        done = run.progress.units()
        todo = ((i, d["text"]) for i, d in enumerate(read_documents(input_path)) if i in chosen and i not in done)
        failed: list[str] = []
        bar = tqdm(desc=f"annotate ({settings['annotator']})", total=len(chosen), initial=len(done & chosen),
                   unit="doc", disable=not run.show_progress)
        if settings["annotator"] == "file":  # every document with a recorded grade, sampled or not
            grades = recorded_grades(Path(settings["grades_file"]))
            bar.reset(total=len(ids))
            for unit, document in enumerate(read_documents(input_path)):
                recorded = grades.get(text_sha256(document["text"]))
                if recorded is not None:
                    run.progress.add(unit, [recorded])
                bar.update(1)
        elif settings["annotator"] == "heuristic":
            for unit, text in todo:
                run.progress.add(unit, [{"edu_score": heuristic_score(text), "edu_annotator": HEURISTIC}])
                bar.update(1)
        else:
            client = llm.LLM(settings, "annotate")
            name = f"llm:{settings['model']}"

            template = settings["completion_template"] or "{prompt}"

            def grade(text: str) -> llm.Answer:
                prompt = PROMPT.format(text=text[:settings["max_chars"]])
                return client.complete(template.replace("{prompt}", prompt),
                                       max_tokens=settings["max_tokens"], temperature=settings["temperature"],
                                       top_logprobs=TOP_LOGPROBS if settings["score"] == "expected" else None)

            def commit(unit: int, answer: llm.Answer) -> None:
                if answer.text is None and answer.retryable:
                    failed.append(answer.error)  # not committed: the rerun tries it again
                    return
                score = expected_grade(answer.logprobs) if settings["score"] == "expected" else \
                    parse_score(answer.text)
                fields = {"edu_score": score, "edu_annotator": name,
                          "edu_answer": (answer.text or "")[:200]}
                if answer.error:
                    fields["edu_error"] = answer.error
                run.progress.add(unit, [fields], {"usage": answer.usage})

            try:
                llm.run_concurrently(grade, todo, settings["concurrency"], commit, bar)
            finally:
                run.progress.flush()
                client.close()
        bar.close()
        if failed:
            raise UsageError(f"{len(failed)} documents could not be graded after {settings['max_retries']} retries "
                             f"(last: {failed[-1]}); rerun the same command to retry only those")
        return report(run, input_path, settings)

    return run_stage("annotate", FIELDS, settings, inputs, output, body, show_progress=show_progress,
                     flush_every=1 if settings["annotator"] == "llm" else 512)


def grades_report(documents: int, grades: list[dict], settings: dict) -> dict:
    """Counts, annotator and score histogram of the grades given to a corpus of `documents`."""
    scores = [g["edu_score"] for g in grades if g.get("edu_score") is not None]
    histogram = [0] * 11
    for s in scores:
        histogram[min(10, int(round(s)))] += 1
    counts = {"documents": documents, "annotated": len(grades),
              "unparsable": sum(1 for g in grades if g.get("edu_score") is None and "edu_error" not in g),
              "errors": sum(1 for g in grades if "edu_error" in g)}
    names = sorted({str(g.get("edu_annotator")) for g in grades})
    return {"counts": counts, "annotator": HEURISTIC if settings["annotator"] == "heuristic" else
            f"llm:{settings['model']}" if settings["annotator"] == "llm" else f"file: {', '.join(names)}",
            "prompt_version": PROMPT_VERSION,
            "scores": {"mean": round(sum(scores) / len(scores), 4) if scores else None,
                       "histogram_0_to_10": histogram}}


def report(run: StageRun, input_path: Path, settings: dict) -> dict:
    grades = {}
    for unit, records in run.progress.results().items():
        grades[unit] = records[0]

    def merged():
        for i, document in enumerate(read_documents(input_path)):
            yield {**document, **grades[i]} if i in grades else document

    run.write(merged())
    result = grades_report(run.written["documents"], list(grades.values()), settings)
    if settings["annotator"] == "llm":
        result["usage"] = llm.usage_report(run.progress.infos(), settings)
    return result
