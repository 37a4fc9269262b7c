"""Generation: phi-eval's batched decoding against batch size 1 and against transformers' own
`model.generate` (what lm-eval's HFLM calls), on the same model and HumanEval prompts.

    .venv/bin/python benchmarks/bench_generation.py [--model DIR] [--limit 164] [--max-new-tokens 128]

Checks that all greedy outputs are identical, then prints the throughput ratios.
Default model: the trained phi-tiny checkpoint ($PHI_EVAL_HOME/models/phi-tiny).
"""
from __future__ import annotations

import argparse
import time

import torch

from phi_eval.models.base import GenerationConfig, GenerationRequest, truncate_at_stop
from phi_eval.models.hf import HFModel
from phi_eval.paths import models_dir
from phi_eval.tasks import TASKS


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def phi_eval_outputs(model: HFModel, requests) -> list[str]:
    done = dict(model.generate(requests, progress=False))
    return [done[i].text for i in range(len(requests))]


@torch.no_grad()
def transformers_outputs(model: HFModel, requests, batch_size: int) -> list[str]:
    """Left-padded batches through model.generate with stop_strings, the completion cut at the first
    stop as lm-eval does. Prompts are left-truncated to the same token budget phi-eval uses."""
    tokenizer, config = model.tokenizer, requests[0].config
    tokenizer.padding_side = "left"
    budget = model.max_length - min(config.max_new_tokens, model.max_length // 2)
    max_new_tokens = min(config.max_new_tokens, model.max_length - budget)
    outputs = []
    for start in range(0, len(requests), batch_size):
        prompts = [tokenizer.decode(tokenizer(r.prompt, add_special_tokens=False)["input_ids"][-budget:])
                   for r in requests[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        generated = model.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                         stop_strings=list(config.stop), tokenizer=tokenizer,
                                         pad_token_id=model.pad_id)
        for row in generated[:, batch["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            outputs.append(truncate_at_stop(text, config.stop)[0])
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(models_dir() / "phi-tiny"))
    parser.add_argument("--limit", type=int, default=164)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    task = TASKS["humaneval"]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, stop=task.stop)
    requests = [GenerationRequest(task.prompt(d), config, 0, d["doc_id"]) for d in task.load_docs(None)[:args.limit]]
    single = HFModel(args.model, name="bench", device="cpu", dtype="float32", batch_size=1)
    batched = HFModel(args.model, name="bench", device="cpu", dtype="float32", batch_size=args.batch_size)

    one, t_one = timed(lambda: phi_eval_outputs(single, requests))
    many, t_many = timed(lambda: phi_eval_outputs(batched, requests))
    hf, t_hf = timed(lambda: transformers_outputs(batched, requests, args.batch_size))
    tokens = sum(len(single.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in one)

    print(f"model {args.model}: {single.parameters:,} parameters; {len(requests)} HumanEval prompts, "
          f"max_new_tokens {args.max_new_tokens}, {tokens} completion tokens, {torch.get_num_threads()} threads")
    print(f"identical greedy outputs, phi-eval batch 1 vs {args.batch_size}: {one == many}")
    print(f"identical greedy outputs, phi-eval vs transformers generate: "
          f"{sum(a == b for a, b in zip(one, hf))}/{len(one)}")
    print(f"phi-eval batch 1:              {t_one:7.2f} s  {tokens / t_one:8.0f} tok/s")
    print(f"phi-eval batch {args.batch_size:<3}:           {t_many:7.2f} s  {tokens / t_many:8.0f} tok/s  "
          f"({t_one / t_many:.2f}x batch 1)")
    print(f"transformers generate, batch {args.batch_size}: {t_hf:7.2f} s  ({t_hf / t_many:.2f}x phi-eval's time)")


if __name__ == "__main__":
    main()
