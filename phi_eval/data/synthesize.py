"""The `synthesize` stage: LLM-written textbook sections or exercises (phi-1's CodeTextbook / CodeExercises).

phi-1 got diversity by constraining each request: textbooks by topic and target audience,
exercises by function name. Request i draws its topic, audience and function name from a
random generator seeded with (`seed`, `kind`, i), and sends the same seed to the endpoint, so
a run is reproducible request for request (and each answer is cached). Replies are cleaned
(an exercise's code is taken out of a Markdown fence), empty ones dropped, and the set is
deduplicated (exact and MinHash near duplicates at `near_threshold`, as the dedup stage).

With an input (in a pipeline, the corpus so far) and `keep_input`, the output is the input's
documents followed by the synthetic ones. Each synthetic document is {"id": "synthetic-KIND-I",
"text", "source": "synthesize", "synthetic": {...}}, its provenance from the seed: kind (the
style), topic, audience, function_name, the stage's seed and the request's index, the sha256 of
the prompt template, the generator (model, endpoint URL, api) and its sampling settings
(temperature, max_tokens, the request's seed), and the verdict of the stage's own dedup; later
stages' verdicts are in their reports (`phi-eval data run`: OUT/provenance.jsonl).
The manifest adds diversity statistics of the kept synthetic texts: distinct-n (distinct
n-grams / all n-grams of whitespace tokens, n = 1, 2, 3), the near-duplicate rate of the
replies, the distinct openings (first five words), the share of the commonest one and the ten
most frequent (small models start every reply alike), the distinct topic x audience (x name)
combinations and the coverage of the topic x audience grid (textbooks) or of the topics
(exercises), and with `embed_model` the embedding spread (mean pairwise cosine distance of the
mean-pooled embeddings), with the usage and cost of the requests.
"""
from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path

from tqdm.auto import tqdm

from phi_eval.data import llm
from phi_eval.data.dedup import deduplicate
from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage

TOPICS = [
    "variables and assignment", "integer and float arithmetic", "string methods", "string formatting",
    "lists and indexing", "list slicing", "list comprehensions", "tuples and unpacking", "dictionaries",
    "sets", "if/elif/else", "boolean logic", "for loops", "while loops", "break and continue", "functions",
    "default and keyword arguments", "return values", "recursion", "scope of variables", "exceptions",
    "reading and writing files", "classes and objects", "inheritance", "iterators", "generators",
    "sorting with keys", "searching a list", "binary search", "stacks and queues", "counting with dictionaries",
    "two-dimensional lists", "string parsing", "modular arithmetic", "prime numbers", "dates and times",
    "simple simulations", "testing with assert", "debugging a function", "time complexity",
]
AUDIENCES = [
    "a high-school student who has never programmed", "a first-year computer science student",
    "a data analyst moving from spreadsheets to Python", "a self-taught beginner preparing for interviews",
    "a biology student who needs to process lab data", "a teenager who likes games",
    "a retiree learning to code for fun", "a math teacher preparing a class", "an engineer new to Python",
    "a student who learns best from many small examples",
]
VERBS = ["count", "find", "merge", "split", "filter", "sort", "group", "reverse", "validate", "parse", "compute",
         "convert", "flatten", "rotate", "normalize", "encode", "summarize", "match", "remove", "pair"]
NOUNS = ["words", "digits", "vowels", "intervals", "matrix", "primes", "pairs", "scores", "dates", "brackets",
         "duplicates", "anagrams", "palindromes", "temperatures", "grades", "coins", "steps", "runs", "peaks", "keys"]

TEXTBOOK = """Write a section of a Python textbook about {topic} for {audience}.
Teach the idea step by step in clear prose, interleaved with short, self-contained code examples
that use only the Python standard library, and end with a small worked example."""
EXERCISE = """Write one Python exercise in the style of HumanEval about {topic}.
Give the function `{name}` a signature and a docstring that states the task precisely and shows
two or three examples, followed by a correct implementation that uses only the Python standard library.
Answer with the code only."""
TEMPLATE_SHA256 = {"textbook": hashlib.sha256(TEXTBOOK.encode()).hexdigest(),
                   "exercises": hashlib.sha256(EXERCISE.encode()).hexdigest()}
FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)

FIELDS = {
    "kind": Field("choice", "textbook", choices=("textbook", "exercises"), help="textbook sections or exercises"),
    "count": Field("int", required=True, minimum=1, help="requests to send (documents before dedup)"),
    "seed": Field("int", 0, help="seeds the constraints and the endpoint's sampling"),
    "topics": Field("strs", TOPICS, help="topics drawn from (default: basic coding concepts)"),
    "audiences": Field("strs", AUDIENCES, help="target audiences drawn from (textbooks)"),
    "function_names": Field("strs", help="function names drawn from (exercises; default: verb_noun pairs)"),
    "keep_input": Field("bool", True, help="with an input: output its documents, then the synthetic ones"),
    "near_threshold": Field("fraction", 0.8, help="MinHash Jaccard similarity that makes outputs duplicates"),
    "embed_model": Field("str", help="model for the embedding-spread statistic (default: not computed)"),
    "max_tokens": Field("int", 1024, minimum=16, help="tokens per reply"),
    "temperature": Field("number", 0.8, minimum=0),
    **llm.FIELDS,
}


def constraints(settings: dict, index: int) -> dict:
    rng = random.Random(f"{settings['seed']}:{settings['kind']}:{index}")
    chosen = {"kind": settings["kind"], "topic": rng.choice(settings["topics"]), "audience": None,
              "function_name": None}
    if settings["kind"] == "textbook":
        chosen["audience"] = rng.choice(settings["audiences"])
    else:
        chosen["function_name"] = rng.choice(settings["function_names"]) if settings["function_names"] else \
            f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
    return chosen


def prompt_for(chosen: dict) -> str:
    if chosen["kind"] == "textbook":
        return TEXTBOOK.format(topic=chosen["topic"], audience=chosen["audience"])
    return EXERCISE.format(topic=chosen["topic"], name=chosen["function_name"])


def clean(text: str, kind: str) -> str:
    if kind == "exercises":
        blocks = FENCE.findall(text)
        if blocks:
            text = "\n\n".join(blocks)
    return text.strip() + "\n" if text.strip() else ""


def distinct_n(texts: list[str], n: int) -> float | None:
    grams, total = set(), 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i:i + n]))
            total += 1
    return round(len(grams) / total, 4) if total else None


def embedding_spread(texts: list[str], spec: str) -> float | None:
    if len(texts) < 2:
        return None
    from phi_eval.contamination.similarity import Embedder

    vectors = Embedder(spec).embed(texts)  # L2-normalised rows
    similarity = vectors @ vectors.T
    n = len(texts)
    return round(float(1 - (similarity.sum() - n) / (n * (n - 1))), 4)


def openings(texts: list[str], words: int = 5) -> dict:
    from collections import Counter

    counts = Counter(" ".join(t.split()[:words]).lower() for t in texts)
    top, n = counts.most_common(1)[0] if counts else ("", 0)
    return {"distinct_openings": round(len(counts) / len(texts), 4) if texts else None,
            "commonest_opening": top, "commonest_opening_share": round(n / len(texts), 4) if texts else None,
            "top_openings": [[opening, count] for opening, count in counts.most_common(10)]}


def grid_coverage(documents: list[dict], settings: dict) -> dict:
    """How much of the topic x audience grid (textbooks) or of the topics (exercises) the kept texts cover."""
    topics = {d["synthetic"]["topic"] for d in documents}
    if settings["kind"] == "textbook":
        cells = {(d["synthetic"]["topic"], d["synthetic"]["audience"]) for d in documents}
        size = len(set(settings["topics"])) * len(set(settings["audiences"]))
        return {"grid": "topic x audience", "cells": size, "covered": len(cells),
                "coverage": round(len(cells) / size, 4), "topics_covered": len(topics),
                "audiences_covered": len({d["synthetic"]["audience"] for d in documents})}
    size = len(set(settings["topics"]))
    return {"grid": "topic", "cells": size, "covered": len(topics), "coverage": round(len(topics) / size, 4)}


def diversity(documents: list[dict], settings: dict) -> dict:
    texts = [d["text"] for d in documents]
    combos = {(d["synthetic"]["topic"], d["synthetic"]["audience"], d["synthetic"]["function_name"])
              for d in documents}
    return {"documents": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "distinct_3": distinct_n(texts, 3), **openings(texts), "distinct_constraints": len(combos),
            "topics_used": len({d["synthetic"]["topic"] for d in documents}),
            "coverage": grid_coverage(documents, settings),
            "embedding_spread": embedding_spread(texts, settings["embed_model"]) if settings["embed_model"] else None,
            "embedding_model": settings["embed_model"]}


def provenance(settings: dict, index: int, chosen: dict) -> dict:
    """Where a synthetic document comes from, seed to reply (no key: only the endpoint's URL)."""
    return {**chosen, "model": settings["model"], "seed": settings["seed"], "request": index,
            "prompt_template_sha256": TEMPLATE_SHA256[settings["kind"]],
            "generator": {"model": settings["model"], "base_url": settings["base_url"], "api": settings["api"]},
            "sampling": {"temperature": settings["temperature"], "max_tokens": settings["max_tokens"],
                         "seed": request_seed(settings, index)},
            "verdicts": {"synthesize_dedup": "kept"}}  # the replies' duplicates are dropped before writing


def request_seed(settings: dict, index: int) -> int:
    return settings["seed"] * 1_000_003 + index


def run_synthesize(settings: dict, input_path: Path | None, output: Path, *, show_progress: bool = True) -> dict:
    from phi_eval.errors import UsageError

    inputs = [jsonl_input(input_path)] if input_path is not None else []

    def body(run: StageRun) -> dict:
        done = run.progress.units()
        failed: list[str] = []
        client = llm.LLM(settings, "synthesize")

        def write(payload: tuple[int, dict]) -> llm.Answer:
            index, chosen = payload
            return client.complete(prompt_for(chosen), max_tokens=settings["max_tokens"],
                                   temperature=settings["temperature"], seed=request_seed(settings, index))

        written = {"tokens": 0, "start": time.monotonic()}

        def commit(index: int, answer: llm.Answer) -> None:
            written["tokens"] += answer.usage.get("completion_tokens", 0)
            bar.set_postfix(tokens=written["tokens"], tok_s=f"{written['tokens'] / (time.monotonic() - written['start']):.1f}",
                            refresh=False)
            if answer.text is None and answer.retryable:
                failed.append(answer.error)
                return
            text = clean(answer.text or "", settings["kind"])
            chosen = constraints(settings, index)
            records = [{"id": f"synthetic-{settings['kind']}-{index}", "text": text, "source": "synthesize",
                        "synthetic": provenance(settings, index, chosen)}] if text else []
            run.progress.add(index, records, {"usage": answer.usage, "empty": not text,
                                              "error": answer.error})

        todo = ((i, (i, constraints(settings, i))) for i in range(settings["count"]) if i not in done)
        with tqdm(desc=f"synthesize ({settings['kind']})", total=settings["count"], initial=len(done), unit="doc",
                  disable=not run.show_progress) as bar:
            try:
                llm.run_concurrently(write, todo, settings["concurrency"], commit, bar)
            finally:
                run.progress.flush()
                client.close()
        if failed:
            raise UsageError(f"{len(failed)} requests failed after {settings['max_retries']} retries "
                             f"(last: {failed[-1]}); rerun the same command to retry only those")
        synthetic, dedup_report = deduplicate(run.progress.records(), {
            "exact": True, "near": True, "threshold": settings["near_threshold"], "num_perm": 128, "shingle_size": 5})
        infos = list(run.progress.infos())

        def everything():
            if input_path is not None and settings["keep_input"]:
                yield from read_documents(input_path)
            yield from synthetic

        run.write(everything())
        duplicates = dedup_report["counts"]["exact_duplicates"] + dedup_report["counts"]["near_duplicates"]
        replies = sum(1 for i in infos if not i["empty"])
        return {"counts": {"requested": settings["count"], "empty_or_failed": sum(1 for i in infos if i["empty"]),
                           "duplicates": duplicates, "near_duplicate_rate": round(duplicates / replies, 4)
                           if replies else None, "synthetic_kept": len(synthetic),
                           "documents": run.written["documents"]},
                "dedup": dedup_report, "diversity": diversity(synthetic, settings),
                "usage": llm.usage_report(infos, settings)}

    return run_stage("synthesize", FIELDS, settings, inputs, output, body, show_progress=show_progress)
