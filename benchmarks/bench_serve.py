"""phi-eval serve: what the HTTP server costs over calling the model in-process, what concurrent clients
gain from its batching, and its log-likelihoods against lm-eval's own API client (`local-completions`).

On the same model (default: the trained phi-tiny checkpoint, else a tiny random Phi) and the same inputs,
in one process:

1. greedy completions of the first N HumanEval prompts (HumanEval's stops): the hf: backend in-process
   (batch 1 and batch auto), then the openai: backend against `phi-eval serve` (which decodes requests
   that wait together as one batch) with 1 and with 8 requests in flight; all outputs must be identical;
2. log-likelihoods of ARC-Easy's (context, choice) pairs, built here as lm-eval's arc_easy builds them
   ("Question: ...\\nAnswer:", " choice"): phi-eval's openai: backend against the server, lm-eval's
   `local-completions` against the same server (token ids, echo, batch 16), and the hf: backend
   in-process; sums must agree to 1e-4 and greedy flags exactly.

    .venv/bin/python benchmarks/bench_serve.py [--model DIR] [--prompts 32] [--max-new-tokens 64] [--pairs 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false"})

import torch  # noqa: E402

from phi_eval.models import GenerationConfig, GenerationRequest, load_model  # noqa: E402
from phi_eval.models.hf import HFModel  # noqa: E402
from phi_eval.paths import models_dir  # noqa: E402
from phi_eval.serve import start_server  # noqa: E402
from phi_eval.tasks import TASKS  # noqa: E402
from phi_eval.zoo import parse_model_spec  # noqa: E402

ARC_EASY = ROOT.parent / "shared" / "benchmarks" / "arc" / "arc_easy.jsonl"


def timed(fn, repeats: int = 2):
    """The result and the best wall time of `repeats` runs (the machine is shared: the best is the least
    disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def texts(model, requests) -> list[str]:
    done = dict(model.generate(requests, progress=False))
    return [done[i].text for i in range(len(requests))]


def arc_pairs(limit: int) -> list[tuple[str, str]]:
    pairs = []
    with open(ARC_EASY) as f:
        for line in f:
            doc = json.loads(line)
            context = f"{doc['query']}\nAnswer:"  # the release's query is "Question: ..."
            pairs += [(context, f" {choice}") for choice in doc["choices"]]
            if len(pairs) >= limit:
                return pairs[:limit]
    return pairs


def lm_eval_loglikelihoods(base_url: str, name: str, tokenizer_dir: str, pairs) -> list[tuple[float, bool]]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(model=name, base_url=f"{base_url}/completions", tokenizer=tokenizer_dir,
                             batch_size=16, num_concurrent=1, max_retries=0, max_length=2048)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]
    return [tuple(r) for r in lm.loglikelihood(requests, disable_tqdm=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: phi-tiny, else a tiny random Phi)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args()

    # One intra-op thread everywhere: on this shared 2-core machine, torch's two OpenMP threads in the
    # main thread ran a forward pass ~6x slower than the server's worker thread did (spin-waiting under
    # load), which would make the in-process rows look slow for a reason that has nothing to do with HTTP.
    torch.set_num_threads(1)
    directory = args.model or models_dir() / "phi-tiny"
    if not (directory / "config.json").exists():
        from tiny import make_tiny_phi

        directory = make_tiny_phi(Path(tempfile.mkdtemp()) / "tiny-phi")
    model = HFModel(str(directory), name="bench", device="cpu")
    print(f"model: {directory} ({model.parameters:,} parameters, context {model.max_length})")

    task = TASKS["humaneval"]
    docs = task.load_docs(None)[:args.prompts]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0, stop=task.stop)
    requests = [GenerationRequest(d["prompt"], config) for d in docs]

    with start_server(model, name="bench") as server:
        texts(model, requests[:2])  # warm up
        model.batch_size = 1
        local, local_s = timed(lambda: texts(model, requests))
        model.batch_size = "auto"
        batched, batched_s = timed(lambda: texts(model, requests))
        rows = [("hf: in-process, batch 1", local_s),
                (f"hf: in-process, batch auto ({sum(a == b for a, b in zip(batched, local))}/{len(requests)} "
                 "identical)", batched_s)]
        for concurrency in (1, 8):
            os.environ["PHI_EVAL_OPENAI_CONCURRENCY"] = str(concurrency)
            api = load_model(parse_model_spec(f"openai:bench@{server.base_url}"))
            served, seconds = timed(lambda: texts(api, requests))
            same = sum(a == b for a, b in zip(served, local))
            rows.append((f"openai: -> serve, {concurrency} in flight ({same}/{len(requests)} identical)", seconds))
        print(f"\ngeneration: {len(requests)} HumanEval prompts, {args.max_new_tokens} new tokens, greedy")
        for label, seconds in rows:
            print(f"  {label:<55} {seconds:7.2f} s  {rows[0][1] / seconds:5.2f}x of in-process batch 1")
        print(f"  8 in flight vs 1: {rows[2][1] / rows[3][1]:.2f}x")

        if not ARC_EASY.exists():
            print("\nno ../shared/benchmarks/arc: log-likelihood part skipped")
            return
        pairs = arc_pairs(args.pairs)
        os.environ["PHI_EVAL_OPENAI_CONCURRENCY"] = "1"  # as lm-eval's num_concurrent=1
        api = load_model(parse_model_spec(f"openai:bench@{server.base_url}"))
        ours, ours_s = timed(lambda: api.loglikelihood(pairs, progress=False))
        theirs, theirs_s = timed(lambda: lm_eval_loglikelihoods(server.base_url, "bench", str(directory), pairs))
        reference, local_s = timed(lambda: model.loglikelihood(pairs, progress=False))
        worst = max(max(abs(a[0] - c[0]), abs(b[0] - c[0])) for a, b, c in zip(ours, theirs, reference))
        greedy = sum(a[1] == b[1] == c[1] for a, b, c in zip(ours, theirs, reference))
        print(f"\nlog-likelihood: {len(pairs)} ARC-Easy (context, choice) pairs")
        print(f"  phi-eval openai: -> serve        {ours_s:7.2f} s")
        print(f"  lm-eval local-completions -> serve {theirs_s:7.2f} s  (phi-eval {theirs_s / ours_s:.2f}x faster)")
        print(f"  hf: in-process                   {local_s:7.2f} s")
        print(f"  largest difference from hf: {worst:.2e}; greedy flags equal on {greedy}/{len(pairs)}")


if __name__ == "__main__":
    main()
