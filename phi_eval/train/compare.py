"""Train two recipes with equal compute and compare them with the harness: phi-1's data-quality
claim in miniature (`phi-eval train A.yaml --compare B.yaml`).

Both models must have the same architecture and see the same number of training tokens
(steps x batch x sequence length), so 6·N·D is equal and only the data differs. They are
compared on text neither was trained on, in bits per byte (their tokenizers differ, so
per-token losses would not compare): HumanEval's canonical solutions given their prompts,
and MBPP's reference solutions; then HumanEval pass@1/pass@k with sampling, and one code
prompt completed by both, greedily. Writes OUT/comparison.md and OUT/comparison.json.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from phi_eval import paths
from phi_eval.errors import UsageError

SIDE_BY_SIDE_PROMPT = '''def is_palindrome(text: str) -> bool:
    """Return True if text reads the same forwards and backwards, ignoring case and spaces.

    >>> is_palindrome("Never odd or even")
    True
    """
'''
STOP = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")


@dataclass
class CompareOptions:
    out: Path
    data_dir: Path | None = None  # MBPP's files; without them MBPP loads from the hub
    n_samples: int = 10
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    limit: int | None = None  # only the first N items of HumanEval and MBPP (a quick look)
    restart: bool = False
    progress: bool = True


def compare(recipe_a, recipe_b, options: CompareOptions) -> Path:
    """Train (or reuse) both checkpoints, evaluate both, write the report; returns the .md path."""
    check_equal_compute(recipe_a, recipe_b)
    if options.n_samples < 1 or (options.limit is not None and options.limit < 1):
        raise UsageError("--n-samples and --limit must be at least 1")
    checkpoints = [trained_checkpoint(r, options) for r in (recipe_a, recipe_b)]
    options.out.mkdir(parents=True, exist_ok=True)

    from phi_eval.zoo import parse_model_spec

    specs = [parse_model_spec(f"hf:{c}") for c in checkpoints]
    rows = [held_out_losses(spec, options) for spec in specs]
    pass_at_k = sampled_pass_at_k(specs, options)
    report = {
        "command": " ".join(["phi-eval", *sys.argv[1:]]) if sys.argv else None,
        "models": [
            {"recipe": r.path, "checkpoint": str(c), **summary_of(c), **row, "humaneval": pass_at_k[spec.slug]}
            for r, c, row, spec in zip((recipe_a, recipe_b), checkpoints, rows, specs)
        ],
        "settings": {"n_samples": options.n_samples, "temperature": options.temperature, "top_p": options.top_p,
                     "max_new_tokens": options.max_new_tokens, "limit": options.limit},
        "side_by_side": {"prompt": SIDE_BY_SIDE_PROMPT, "completions": [side_by_side(s) for s in specs]},
    }
    (options.out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = options.out / "comparison.md"
    markdown.write_text(to_markdown(report))
    return markdown


def check_equal_compute(a, b) -> None:
    if a.finetune is not None or b.finetune is not None:
        raise UsageError("--compare takes single-phase recipes (no finetune:); compare the phases one by one")
    if a.model != b.model:
        field = next(k for k, v in a.model.__dict__.items() if getattr(b.model, k) != v)
        raise UsageError(f"{b.path}: model.{field} differs from {a.path}'s; equal compute needs the same model")
    vocab = [r.tokenizer.train.vocab_size if r.tokenizer.train else r.tokenizer.path for r in (a, b)]
    if vocab[0] != vocab[1]:
        raise UsageError(f"{b.path}: the tokenizer differs from {a.path}'s (so does the parameter count); "
                         "give both the same tokenizer.train.vocab_size or tokenizer.path")
    tokens = [r.training.total_steps * r.training.tokens_per_step for r in (a, b)]
    if tokens[0] != tokens[1]:
        raise UsageError(f"{b.path}: trains on {tokens[1]:,} tokens, {a.path} on {tokens[0]:,}; equal compute needs "
                         "the same training.max_steps x batch_size x seq_len")
    if a.training.max_minutes or b.training.max_minutes:
        raise UsageError("training.max_minutes can stop one run early; set it to null in both recipes to compare")


def trained_checkpoint(recipe, options: CompareOptions) -> Path:
    """The recipe's checkpoint under $PHI_EVAL_HOME/models, trained unless it already holds
    this very recipe, finished (checkpoints make an interrupted run resume)."""
    from phi_eval.train import load_recipe, train

    out = paths.models_dir() / recipe.name
    done = (out / "training_summary.json").is_file() and (out / "recipe.yaml").is_file()
    if done and not options.restart and load_recipe(out / "recipe.yaml").to_dict() == recipe.to_dict():
        print(f"{recipe.name}: already trained in {out}", file=sys.stderr)
        return out
    return train(recipe, progress=options.progress, restart=options.restart)


def summary_of(checkpoint: Path) -> dict:
    s = json.loads((checkpoint / "training_summary.json").read_text())
    corpus = s["corpus"]
    return {"name": s["recipe"], "parameters": s["parameters"], "tokens_seen": s["tokens_seen"],
            "train_flops": 6 * s["parameters"] * s["tokens_seen"], "corpus_tokens": corpus["tokens"],
            "corpus_documents": corpus["files"], "epochs": s["epochs"], "val_loss_own": s["val_loss_last"],
            "train_time_s": s["train_time_s"], "mfu": s.get("mfu")}


def held_out_losses(spec, options: CompareOptions) -> dict:
    """Bits per byte on HumanEval's canonical solutions (after their prompts) and on MBPP's
    reference code (test split), neither of which either model saw."""
    from phi_eval.models import load_model
    from phi_eval.tasks import TASKS

    model = load_model(spec, device="auto")
    problems = TASKS["humaneval"].load_docs(None)[: options.limit]
    pairs = [(p["prompt"], p["canonical_solution"]) for p in problems]
    row = {"humaneval_bits_per_byte": bits_per_byte(model, pairs, options.progress)}
    try:
        mbpp = TASKS["mbpp"].load_docs(options.data_dir)
    except UsageError as e:
        row["mbpp_bits_per_byte"], row["mbpp_note"] = None, str(e)
    else:
        row["mbpp_bits_per_byte"] = bits_per_byte(model, [("", d["code"]) for d in mbpp[: options.limit]],
                                                  options.progress)
    return row


@torch.no_grad()
def bits_per_byte(model, pairs: list[tuple[str, str]], progress: bool) -> float:
    """-log2 P(continuation | context) per UTF-8 byte of the continuations, summed over pairs.
    A continuation longer than the model's context is scored in windows, each token seeing up
    to a full context of the tokens before it (an empty context is the eos/bos token)."""
    tokenizer, network, window = model.tokenizer, model.model, model.max_length
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total_nats = 0.0
    for context, continuation in tqdm(pairs, desc=f"held-out loss {model.identity['name']}", disable=not progress):
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        ids = [prefix] + tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        first = 1 + len(context_ids)  # index of the continuation's first token
        for start in range(first, len(ids), window):
            end = min(start + window, len(ids))  # score ids[start:end]
            left = max(0, end - 1 - window)
            inputs = torch.tensor([ids[left:end - 1]], device=model.device)
            logprobs = torch.log_softmax(network(input_ids=inputs).logits[0].float(), dim=-1)
            targets = torch.tensor(ids[start:end], device=model.device)
            total_nats -= float(logprobs[start - 1 - left:end - 1 - left].gather(-1, targets[:, None]).sum())
    return total_nats / math.log(2) / sum(len(c.encode()) for _, c in pairs)


def sampled_pass_at_k(specs, options: CompareOptions) -> dict:
    from phi_eval.evaluate import RunOptions, run
    from phi_eval.tasks import TASKS

    run_options = RunOptions(out=options.out / "eval", n_samples=options.n_samples, temperature=options.temperature,
                             top_p=options.top_p, max_new_tokens=options.max_new_tokens, limit=options.limit,
                             progress=options.progress)
    results = {}
    for spec, result in zip(specs, run(specs, [TASKS["humaneval"]], run_options, argv=sys.argv)):
        metrics = result.document["results"]["humaneval"]
        results[spec.slug] = {"results": str(result.path), **{k.split(",")[0]: v for k, v in metrics.items()
                                                              if k.startswith("pass@")}}
    return results


def side_by_side(spec) -> str:
    from phi_eval.models import GenerationConfig, GenerationRequest, load_model

    model = load_model(spec, device="auto")
    request = GenerationRequest(SIDE_BY_SIDE_PROMPT, GenerationConfig(max_new_tokens=96, stop=STOP))
    (_, completion), = model.generate([request], progress=False)
    return completion.text


def to_markdown(report: dict) -> str:
    a, b = report["models"]
    s = report["settings"]

    def fmt(value, spec="{:.4f}"):
        return "n/a" if value is None else spec.format(value)

    def passes(m, k):
        value, err = m["humaneval"].get(f"pass@{k}"), m["humaneval"].get(f"pass@{k}_stderr")
        return "n/a" if value is None else f"{value:.4f} ± {err:.4f}" if err is not None else f"{value:.4f}"

    rows = [
        ("parameters", f"{a['parameters']:,}", f"{b['parameters']:,}"),
        ("training tokens seen (steps x batch x seq)", f"{a['tokens_seen']:,}", f"{b['tokens_seen']:,}"),
        ("training compute 6·N·D (FLOPs)", f"{a['train_flops']:.3g}", f"{b['train_flops']:.3g}"),
        ("corpus: documents / tokens", f"{a['corpus_documents']:,} / {a['corpus_tokens']:,}",
         f"{b['corpus_documents']:,} / {b['corpus_tokens']:,}"),
        ("epochs over the corpus", f"{a['epochs']:.2f}", f"{b['epochs']:.2f}"),
        ("val loss on its own held-out split (nats/token; not comparable)", fmt(a["val_loss_own"]),
         fmt(b["val_loss_own"])),
        ("**HumanEval canonical solutions, bits/byte** (lower is better)", fmt(a["humaneval_bits_per_byte"]),
         fmt(b["humaneval_bits_per_byte"])),
        ("**MBPP reference code, bits/byte** (lower is better)", fmt(a["mbpp_bits_per_byte"]),
         fmt(b["mbpp_bits_per_byte"])),
        (f"HumanEval pass@1 (n={s['n_samples']}, T={s['temperature']}, top-p {s['top_p']})", passes(a, 1),
         passes(b, 1)),
    ]
    if s["n_samples"] >= 10:
        rows.append(("HumanEval pass@10", passes(a, 10), passes(b, 10)))
    rows.append(("training time (s) / MFU", f"{a['train_time_s']:.0f} / {fmt(a['mfu'], '{:.1%}')}",
                 f"{b['train_time_s']:.0f} / {fmt(b['mfu'], '{:.1%}')}"))
    lines = [f"| | {a['name']} | {b['name']} |", "|---|---|---|", *(f"| {r} | {x} | {y} |" for r, x, y in rows)]
    for m in (a, b):
        if m.get("mbpp_note"):
            lines.append(f"\nMBPP for {m['name']}: {m['mbpp_note']}")
    lines += ["", "Side by side, greedy, the same prompt:", "", "```python", report["side_by_side"]["prompt"].rstrip(),
              "```"]
    for m, text in zip((a, b), report["side_by_side"]["completions"]):
        lines += ["", f"{m['name']}:", "", "```python", text.rstrip() or "(empty)", "```"]
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"
