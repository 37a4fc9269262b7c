"""Annotation throughput (documents/s) of `phi-eval data annotate` with concurrency 1 vs 8.

Two endpoints, each with the same documents (the first N *.py files of the standard library),
the cache off so every document is a request:

- `phi-eval serve` over a tiny random Phi (tests/tiny.py), started as a subprocess the way a
  user would (`phi-eval serve hf:DIR --port P`). The server decodes the requests that wait
  together as one batch, so concurrency gains what batching and overlapping HTTP work give.
- a scripted endpoint that answers every request after a fixed latency and serves requests in
  parallel, like a hosted API: what the client's thread pool gains when the server scales.

    .venv/bin/python benchmarks/bench_annotation.py [--docs 48] [--rounds 3] [--latency 0.2] [--skip-serve]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false"})

from phi_eval.data.annotate import FIELDS, run_annotate  # noqa: E402
from phi_eval.data.stage import validate  # noqa: E402


def corpus(path: Path, count: int, max_chars: int) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))[:count]
    path.write_text("".join(json.dumps({"id": p.name, "text": p.read_text()[:max_chars]}) + "\n" for p in files))
    return path


def throughput(base_url: str, model: str, documents: Path, concurrency: int, work: Path) -> tuple[float, dict]:
    settings = validate(FIELDS, {"annotator": "llm", "model": model, "base_url": base_url, "cache": False,
                                 "concurrency": concurrency, "max_tokens": 4, "max_chars": 1500}, "--")
    output = work / f"c{concurrency}-{time.monotonic_ns()}.jsonl"
    start = time.perf_counter()
    manifest = run_annotate(settings, documents, output, show_progress=False)
    seconds = time.perf_counter() - start
    return manifest["counts"]["annotated"] / seconds, manifest


def measure(name: str, base_url: str, model: str, documents: Path, work: Path, rounds: int) -> list[tuple]:
    """Median docs/s over `rounds` runs at each concurrency, alternating 1 and 8 so load drifts hit both."""
    rates = {1: [], 8: []}
    for round_number in range(rounds):
        for concurrency in (1, 8) if round_number % 2 == 0 else (8, 1):
            rate, manifest = throughput(base_url, model, documents, concurrency, work)
            rates[concurrency].append(rate)
    return [(name, c, statistics.median(r), min(r), max(r), manifest["counts"]) for c, r in rates.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(model_dir: Path) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "phi-eval"), "serve", f"hf:{model_dir}",
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"phi-eval serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                return process, base_url, json.loads(response.read())["data"][0]["id"]
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("phi-eval serve did not answer /v1/models within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request of the scripted endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="runs per concurrency; the median is reported")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    os.environ["PHI_EVAL_HOME"] = tempfile.mkdtemp(prefix="bench-annotation-")
    work = Path(tempfile.mkdtemp(prefix="bench-annotation-work-"))
    documents = corpus(work / "docs.jsonl", args.docs, 1500)
    rows = []

    if not args.skip_serve:
        from tiny import make_tiny_phi

        process, base_url, model = start_serve(make_tiny_phi(work / "tiny-phi"))
        try:
            throughput(base_url, model, documents, 8, work)  # warm-up: first-call costs out of the timings
            rows += measure("phi-eval serve, tiny Phi", base_url, model, documents, work, args.rounds)
        finally:
            process.terminate()
            process.wait(timeout=30)

    from test_data_llm import FakeEndpoint

    endpoint = FakeEndpoint(reply=lambda prompt: "5", delay=args.latency)
    try:
        rows += measure(f"scripted endpoint, {args.latency:g} s per request, parallel", endpoint.base_url,
                        "scripted", documents, work, args.rounds)
    finally:
        endpoint.close()

    print(f"{args.docs} documents, cache off, median of {args.rounds} runs; load average "
          f"{os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    print("| endpoint | concurrency | docs/s (median) | min - max | annotated (unparsable) |\n|---|---|---|---|---|")
    for name, concurrency, rate, low, high, counts in rows:
        print(f"| {name} | {concurrency} | {rate:.2f} | {low:.2f} - {high:.2f} | "
              f"{counts['annotated']} ({counts['unparsable']}) |")
    for name in dict.fromkeys(r[0] for r in rows):
        one, eight = (r[2] for r in rows if r[0] == name)
        print(f"{name}: concurrency 8 / 1 = {eight / one:.2f}x")


if __name__ == "__main__":
    main()
