"""n-gram contamination checks at scale: phi-eval's index vs lm-eval's n-gram code vs a Python set.

    .venv/bin/python benchmarks/bench_contamination.py [--tokens 100e6] [--set-tokens 20e6]

1. Builds a corpus of at least --tokens words (lm-eval normalisation) from the text files on
   this machine (Python sources first, then C headers and sources, docs), one JSONL record per
   distinct file, with every 10th HumanEval and MBPP item planted verbatim. Kept under
   benchmarks/out/contamination/ and reused by later runs.
2. Runs each contender in its own process (so its peak RSS is its own), on the same corpus:
   - phi-eval: `build_index` (tokens/s, peak memory, index bytes per token), then a query of every
     HumanEval and MBPP item against the saved index, from a fresh process;
   - lm-eval: its `get_train_overlap` algorithm with its own functions: a lookup of the benchmark's
     13-grams (`Janitor.normalize_string`, `word_ngrams`) and a scan of every corpus 13-gram
     against it (there is no reusable index: every new benchmark set rescans the corpus);
     and `Janitor.clean_python` over the corpus (its decontamination pass) vs phi-eval's
     `decontaminate`;
   - a plain Python set of the corpus's 13-gram strings, on the first --set-tokens tokens (the
     whole corpus would not fit in this machine's memory that way), queried with every item, and
     phi-eval's index of the same prefix for comparison.
3. Checks that all agree: the per-item fraction of 13-grams found is identical between phi-eval
   and lm-eval's scan (whole corpus) and between phi-eval and the set (prefix).
Writes benchmarks/out/bench_contamination.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
from itertools import accumulate
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
WORK = OUT / "contamination"
CORPUS = WORK / "corpus"
SUFFIXES = (".py", ".pyi", ".h", ".c", ".cpp", ".hpp", ".txt", ".md", ".rst", ".html", ".js")
SKIP = ("/proc", "/sys", "/dev", "/run", str(OUT), "/tmp")
PART_BYTES = 128 << 20


def benchmark_items():
    from phi_eval.contamination.items import load_items
    from phi_eval.tasks import TASKS

    data = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "benchmarks"))
    return load_items([TASKS["humaneval"], TASKS["mbpp"]], data)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anonymous_mb() -> float:
    """Resident memory now, less pages mapped from files (the index's memory-mapped pages)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:"))) / 1024


# ------------------------------------------------------------------------------- the corpus

def build_corpus(target_tokens: int) -> dict:
    from phi_eval.contamination.normalize import words

    manifest_path = WORK / "corpus.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["target_tokens"] == target_tokens:
            return manifest
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("*.jsonl"):
        old.unlink()
    items = benchmark_items()
    planted = items[::10]
    seen, counts, part, part_bytes, total_bytes, tokens = set(), [], 0, 0, 0, 0
    out = open(CORPUS / f"part-{part:03d}.jsonl", "w")
    started = time.time()

    def write(text: str, name: str) -> None:
        nonlocal part, part_bytes, total_bytes, out, tokens
        line = json.dumps({"text": text, "path": name}, ensure_ascii=False) + "\n"
        if part_bytes > PART_BYTES:
            out.close()
            part += 1
            part_bytes = 0
            out = open(CORPUS / f"part-{part:03d}.jsonl", "w")
        out.write(line)
        part_bytes += len(line)
        total_bytes += len(text.encode())
        counts.append(len(words(text)))
        tokens += counts[-1]

    def files():
        for suffix in SUFFIXES:
            listing = subprocess.run(["find", "/", "-xdev", "-type", "f", "-name", f"*{suffix}"],
                                     capture_output=True, text=True).stdout.split("\n")
            yield from sorted(p for p in listing if p and not p.startswith(SKIP))

    next_plant = 0  # item k goes in after (k + 1) / (len(planted) + 1) of the target, spread through the corpus
    for path in files():
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        digest = hashlib.sha1(data).digest()
        if digest in seen or b"\0" in data[:8192]:
            continue
        seen.add(digest)
        text = data.decode("utf-8", errors="replace")
        if not text.split():
            continue
        write(text, path)
        while next_plant < len(planted) and tokens >= (next_plant + 1) * target_tokens / (len(planted) + 1):
            item = planted[next_plant]
            write(item.text, f"planted:{item.task}:{item.doc_id}")
            next_plant += 1
        if tokens >= target_tokens:
            break
    for item in planted[next_plant:]:
        write(item.text, f"planted:{item.task}:{item.doc_id}")
    out.close()
    documents = len(counts)
    manifest = {"target_tokens": target_tokens, "tokens": tokens, "documents": documents, "text_bytes": total_bytes,
                "files": sorted(str(p) for p in CORPUS.glob("*.jsonl")),
                "planted": [f"{i.task}:{i.doc_id}" for i in planted], "seconds": round(time.time() - started, 1),
                "document_tokens": counts}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def corpus_documents(limit: int | None = None):
    """The corpus's documents in order; with `limit`, only the first `limit` of them."""
    from itertools import islice

    from phi_eval.contamination.corpus import iter_documents

    return islice(iter_documents([str(CORPUS)]), limit)


# ------------------------------------------------------------------------------- contenders

def phase_phi_build(args) -> dict:
    from phi_eval.contamination.ngram_index import build_index

    directory = WORK / ("index-prefix" if args.prefix else "index")
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    started = time.time()
    build_index(corpus_documents(args.prefix), directory, n=13, unit="word", tokenizer=None, identity={},
                progress=False)
    seconds = time.time() - started
    meta = json.loads((directory / "meta.json").read_text())
    disk = sum(f.stat().st_size for f in directory.iterdir())
    return {"seconds": seconds, "tokens": meta["units"], "tokens_per_s": meta["units"] / seconds,
            "ngrams": meta["ngrams"], "documents": meta["documents"], "index_bytes": disk,
            "index_bytes_per_token": disk / meta["units"], "peak_rss_mb": peak_mb()}


def phase_phi_query(args) -> dict:
    from phi_eval.contamination.ngram_index import NgramIndex

    items = benchmark_items()
    started = time.time()
    index = NgramIndex(WORK / ("index-prefix" if args.prefix else "index"))
    results = index.query([item.text for item in items])
    seconds = time.time() - started
    return {"seconds": seconds, "items": len(items), "peak_rss_mb": peak_mb(), "anonymous_rss_mb": anonymous_mb(),
            "fractions": {f"{i.task}:{i.doc_id}": r["fraction"] for i, r in zip(items, results)},
            "longest_spans": {f"{i.task}:{i.doc_id}": r["longest_span"] for i, r in zip(items, results)}}


def phase_lm_eval_scan(args) -> dict:
    """lm-eval's get_train_overlap: the benchmark's 13-gram lookup, then every corpus 13-gram against it."""
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    items = benchmark_items()
    janitor = Janitor()
    started = time.time()
    lookup: dict[str, set[int]] = {}
    for i, item in enumerate(items):
        for ngram in word_ngrams(janitor.normalize_string(item.text), 13):
            lookup.setdefault(ngram, set()).add(i)
    found: set[str] = set()
    tokens = 0
    for document in corpus_documents():
        normalized = janitor.normalize_string(document.text)
        tokens += len(normalized.split())
        for ngram in word_ngrams(normalized, 13):
            if ngram in lookup:
                found.add(ngram)
    seconds = time.time() - started
    fractions = {}
    for item in items:
        grams = list(word_ngrams(janitor.normalize_string(item.text), 13))
        fractions[f"{item.task}:{item.doc_id}"] = round(sum(g in found for g in grams) / len(grams), 6) if grams else None
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "peak_rss_mb": peak_mb(),
            "fractions": fractions}


def phase_lm_eval_clean(args) -> dict:
    """lm-eval's decontamination pass (Janitor.clean_python: its C++ module is not built) over the corpus."""
    from lm_eval.decontamination.janitor import Janitor

    items = benchmark_items()
    janitor = Janitor()
    started = time.time()
    for item in items:
        janitor.register_contaminant_python(item.text)
    dirty = tokens = 0
    for document in corpus_documents():
        tokens += len(document.text.split())
        chunks = janitor.clean_python(document.text)
        # It returns [] for every document of at most 200 characters, clean or not; count the longer ones.
        dirty += len(document.text) > janitor.minimum_slice_length and chunks != [document.text]
    seconds = time.time() - started
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "documents_changed": dirty,
            "peak_rss_mb": peak_mb()}


def phase_phi_decontaminate(args) -> dict:
    from phi_eval.contamination.decontaminate import decontaminate

    items = benchmark_items()
    started = time.time()
    manifest = decontaminate([str(CORPUS)], items, WORK / "decontaminated.jsonl", WORK / "decontaminated.json",
                             progress=False)
    seconds = time.time() - started
    (WORK / "decontaminated.jsonl").unlink()
    return {"seconds": seconds, "documents_dropped": manifest["documents_dropped"], "peak_rss_mb": peak_mb()}


def phase_python_set(args) -> dict:
    """A plain set of every corpus 13-gram string (lm-eval's normalisation), then a lookup per item."""
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    janitor = Janitor()
    before = peak_mb()
    started = time.time()
    corpus: set[str] = set()
    tokens = ngrams = 0
    for document in corpus_documents(args.prefix):
        normalized = janitor.normalize_string(document.text)
        tokens += len(normalized.split())
        grams = list(word_ngrams(normalized, 13))
        ngrams += len(grams)
        corpus.update(grams)
    build = time.time() - started
    items = benchmark_items()
    started = time.time()
    fractions = {}
    for item in items:
        grams = list(word_ngrams(janitor.normalize_string(item.text), 13))
        fractions[f"{item.task}:{item.doc_id}"] = round(sum(g in corpus for g in grams) / len(grams), 6) if grams else None
    query = time.time() - started
    peak = peak_mb()
    return {"seconds": build, "tokens": tokens, "tokens_per_s": tokens / build, "ngrams": ngrams,
            "distinct_ngrams": len(corpus), "query_seconds": query, "peak_rss_mb": peak,
            "bytes_per_token": (peak - before) * 2**20 / tokens, "fractions": fractions}


PHASES = {"phi_build": phase_phi_build, "phi_query": phase_phi_query, "lm_eval_scan": phase_lm_eval_scan,
          "lm_eval_clean": phase_lm_eval_clean, "phi_decontaminate": phase_phi_decontaminate,
          "python_set": phase_python_set}


def run_phase(name: str, prefix: int | None = None) -> dict:
    command = [sys.executable, __file__, "--phase", name] + (["--prefix", str(prefix)] if prefix else [])
    print(f"running {name}" + (f" (first {prefix:,} documents)" if prefix else ""), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {result['seconds']:.1f} s, peak {result['peak_rss_mb']:.0f} MB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=float, default=100e6, help="corpus size in words (lm-eval normalisation)")
    parser.add_argument("--set-tokens", type=float, default=20e6, help="prefix the Python set holds")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", type=int, help=argparse.SUPPRESS)  # documents
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args)
        print(json.dumps(result))
        return

    corpus = build_corpus(int(args.tokens))
    print(f"corpus: {corpus['documents']:,} documents, {corpus['tokens']:,} words, "
          f"{corpus['text_bytes'] / 2**20:.0f} MiB of text", flush=True)
    # The prefix: the first documents that hold --set-tokens words.
    prefix = next((i + 1 for i, total in enumerate(accumulate(corpus["document_tokens"])) if total >= args.set_tokens),
                  corpus["documents"])
    results = {name: run_phase(name) for name in ("phi_build", "phi_query", "lm_eval_scan", "phi_decontaminate",
                                                  "lm_eval_clean")}
    results["phi_build_prefix"] = run_phase("phi_build", prefix)
    results["phi_query_prefix"] = run_phase("phi_query", prefix)
    results["python_set"] = run_phase("python_set", prefix)

    whole_agree = results["phi_query"]["fractions"] == results["lm_eval_scan"]["fractions"]
    prefix_agree = results["phi_query_prefix"]["fractions"] == results["python_set"]["fractions"]
    flagged = sorted(k for k, f in results["phi_query"]["fractions"].items() if f)
    summary = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
               "corpus": {k: v for k, v in corpus.items() if k != "document_tokens"},
               "agree_with_lm_eval": whole_agree, "agree_with_python_set": prefix_agree,
               "flagged_items": flagged,
               "results": {k: {key: v for key, v in r.items() if key not in ("fractions", "longest_spans")}
                           for k, r in results.items()}}
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_contamination.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))


def table(summary: dict) -> str:
    r = summary["results"]
    build, query, scan, clean, ours_clean = (r["phi_build"], r["phi_query"], r["lm_eval_scan"], r["lm_eval_clean"],
                                            r["phi_decontaminate"])
    prefix_build, prefix_query, pyset = r["phi_build_prefix"], r["phi_query_prefix"], r["python_set"]
    lines = [
        f"corpus: {summary['corpus']['tokens']:,} words, {summary['corpus']['documents']:,} documents; "
        f"items: {query['items']}; flagged: {len(summary['flagged_items'])}; "
        f"fractions equal to lm-eval's: {summary['agree_with_lm_eval']}, to the set's: {summary['agree_with_python_set']}",
        "",
        "| contender | corpus | build / scan | tokens/s | peak RSS | query, all items |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| phi-eval index | whole | {build['seconds']:.1f} s | {build['tokens_per_s'] / 1e6:.2f} M | "
        f"{build['peak_rss_mb']:.0f} MB | {query['seconds']:.2f} s ({query['peak_rss_mb']:.0f} MB, "
        f"{query['anonymous_rss_mb']:.0f} MB not file-backed) |",
        f"| lm-eval lookup + scan | whole | {scan['seconds']:.1f} s | {scan['tokens_per_s'] / 1e6:.2f} M | "
        f"{scan['peak_rss_mb']:.0f} MB | (a new scan) |",
        f"| phi-eval index | first {prefix_build['tokens']:,} | {prefix_build['seconds']:.1f} s | "
        f"{prefix_build['tokens_per_s'] / 1e6:.2f} M | {prefix_build['peak_rss_mb']:.0f} MB | "
        f"{prefix_query['seconds']:.2f} s |",
        f"| Python set | first {pyset['tokens']:,} | {pyset['seconds']:.1f} s | {pyset['tokens_per_s'] / 1e6:.2f} M | "
        f"{pyset['peak_rss_mb']:.0f} MB | {pyset['query_seconds']:.2f} s |",
        "",
        f"index on disk: {build['index_bytes_per_token']:.2f} bytes per token; Python set: "
        f"{pyset['bytes_per_token']:.0f} bytes per token in memory",
        f"decontaminate (drop): phi-eval {ours_clean['seconds']:.1f} s ({ours_clean['documents_dropped']} dropped), "
        f"lm-eval Janitor.clean_python {clean['seconds']:.1f} s ({clean['documents_changed']} documents "
        "over 200 characters cut)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
