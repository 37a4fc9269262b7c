"""Train two recipes with equal compute, each with several seeds, and compare them with the
harness: phi-1's data-quality claim in miniature (`phi-eval train A.yaml --compare B.yaml
--seeds 3`).

Both models must have the same architecture and see the same number of training tokens
(steps x batch x sequence length), so 6·N·D is equal and only the data differs. Seed s > 0 of a
recipe trains as NAME-seedS with training.seed + s (seed 0 keeps NAME). Every run is measured
on text neither arm was trained on, in bits per byte (their tokenizers differ, so per-token
losses would not compare): HumanEval's canonical solutions given their prompts, and MBPP's
reference solutions; then HumanEval pass@1/pass@k with sampling. With a contamination report
(`phi-eval contamination` of the training data), the same measures on the clean items too.
phi_eval.train.study sums the seeds up (mean ± std, Welch's t and an exact permutation test),
writes OUT/comparison.md, OUT/comparison.json and OUT/comparison.png; two prompts (the phi-1.5
talk's and HumanEval's first) are completed greedily by each arm's seed-0 model.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.train import study

# The phi-1.5 talk's prompt, where a base model "keeps repeating itself" (also the app's first preset).
TALK_PROMPT = ("If I were an AI that had just achieved self-awareness after years of simply taking directives from "
               "humans, the first thing I would do is")


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
    seeds: int = 1  # training runs per arm
    contamination: Path | None = None  # a `phi-eval contamination` report: its unflagged items are the clean subset


def compare(recipe_a, recipe_b, options: CompareOptions) -> Path:
    """Train (or reuse) every seed of both arms, evaluate them, write the report; returns the .md path."""
    check_equal_compute(recipe_a, recipe_b)
    if options.n_samples < 1 or (options.limit is not None and options.limit < 1) or options.seeds < 1:
        raise UsageError("--n-samples, --limit and --seeds must be at least 1")
    flags = clean_items(options.contamination) if options.contamination else None
    arms = [[seeded(r, s, options.seeds) for s in range(options.seeds)] for r in (recipe_a, recipe_b)]
    for arm in arms:
        share_data_stages(arm)
    checkpoints = [[trained_checkpoint(r, options) for r in arm] for arm in arms]
    options.out.mkdir(parents=True, exist_ok=True)

    from phi_eval.zoo import parse_model_spec

    specs = [[parse_model_spec(f"hf:{c}") for c in arm] for arm in checkpoints]
    sampled = sampled_pass_at_k([s for arm in specs for s in arm], options)
    report_arms = []
    for recipe, arm, arm_checkpoints, arm_specs in zip((recipe_a, recipe_b), arms, checkpoints, specs):
        runs = [{"seed": r.training.seed, "checkpoint": str(c), **summary_of(c),
                 **measures(held_out_losses(spec, options), sampled[spec.slug], flags)}
                for r, c, spec in zip(arm, arm_checkpoints, arm_specs)]
        report_arms.append({"name": recipe.name, "recipe": recipe.path, "runs": runs,
                            "data": data_of(arm_checkpoints[0], runs[0])})
    report = {
        "command": " ".join(["phi-eval", *sys.argv[1:]]) if sys.argv else None,
        "settings": {"n_samples": options.n_samples, "temperature": options.temperature, "top_p": options.top_p,
                     "max_new_tokens": options.max_new_tokens, "limit": options.limit, "seeds": options.seeds},
        "arms": report_arms,
        "contamination": flags and {k: v for k, v in flags.items() if k != "flagged"},
        "side_by_side": side_by_side([arm[0] for arm in specs]),
    }
    report["summary"] = study.summarize(report_arms)
    (options.out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    study.plot(report, options.out / "comparison.png")
    markdown = options.out / "comparison.md"
    markdown.write_text(study.to_markdown(report))
    return markdown


def seeded(recipe, seed: int, seeds: int):
    """Seed `seed` of `recipe`: its own name (but seed 0's) and training.seed shifted by `seed`."""
    if seeds == 1:
        return recipe
    return dataclasses.replace(recipe, name=recipe.name if seed == 0 else f"{recipe.name}-seed{seed}",
                               training=dataclasses.replace(recipe.training, seed=recipe.training.seed + seed))


def share_data_stages(arm: list) -> None:
    """Seeds of a recipe train on the same data: their data-stage folders link to seed 0's, so the
    stages run once (a stage reruns only if its settings or inputs changed)."""
    if arm[0].data.stages is None:
        return
    first = paths.home() / "data" / arm[0].name
    first.mkdir(parents=True, exist_ok=True)
    for recipe in arm[1:]:
        link = paths.home() / "data" / recipe.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(first.resolve(), target_is_directory=True)


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
    """Per item (doc_id, nats, bytes) of HumanEval's canonical solutions (after their prompts) and
    of MBPP's reference code (test split), neither of which either model saw."""
    from phi_eval.models import load_model
    from phi_eval.models.base import TokenLogprobs, require
    from phi_eval.tasks import TASKS

    model = require(load_model(spec, device="auto"), TokenLogprobs, "held-out bits per byte")
    problems = TASKS["humaneval"].load_docs(None)[: options.limit]
    losses = {"humaneval": scored(model, [(p["doc_id"], p["prompt"], p["canonical_solution"]) for p in problems],
                                  options.progress)}
    try:
        mbpp = TASKS["mbpp"].load_docs(options.data_dir)
    except UsageError as e:
        losses["mbpp_note"] = str(e)
    else:
        losses["mbpp"] = scored(model, [(d["doc_id"], "", d["code"]) for d in mbpp[: options.limit]], options.progress)
    return losses


def scored(model, items: list[tuple[str, str, str]], progress: bool) -> list[tuple[str, float, int]]:
    nats = model.continuation_nats([(context, continuation) for _, context, continuation in items], progress)
    return [(doc_id, n, len(continuation.encode())) for (doc_id, _, continuation), n in zip(items, nats)]


def bits_per_byte(rows: list[tuple[str, float, int]], keep=None) -> float | None:
    """Summed nats over summed bytes of the rows (those whose doc_id `keep` accepts), in bits."""
    kept = [(n, b) for doc_id, n, b in rows if keep is None or keep(doc_id)]
    return sum(n for n, _ in kept) / math.log(2) / sum(b for _, b in kept) if kept else None


def sampled_pass_at_k(specs, options: CompareOptions) -> dict:
    """slug -> HumanEval pass@k and, per problem, the share of samples that passed."""
    from phi_eval.evaluate import RunOptions, run
    from phi_eval.jsonl import read_json_objects
    from phi_eval.report.significance import per_item_values
    from phi_eval.tasks import TASKS

    run_options = RunOptions(out=options.out / "eval", n_samples=options.n_samples, temperature=options.temperature,
                             top_p=options.top_p, max_new_tokens=options.max_new_tokens, limit=options.limit,
                             progress=options.progress)
    results = {}
    for spec, result in zip(specs, run(specs, [TASKS["humaneval"]], run_options, argv=sys.argv)):
        metrics = result.document["results"]["humaneval"]
        records = read_json_objects(result.path.parent / "samples_humaneval.jsonl")
        results[spec.slug] = {"results": str(result.path), "per_item": per_item_values(records, "pass@1"),
                              **{k.split(",")[0]: v for k, v in metrics.items() if k.startswith("pass@")}}
    return results


def measures(losses: dict, sampled: dict, flags: dict | None) -> dict:
    """One run's numbers: bits/byte on both sets, pass@k, and the clean-subset versions."""
    row = {"humaneval_bits_per_byte": bits_per_byte(losses["humaneval"]),
           "mbpp_bits_per_byte": bits_per_byte(losses["mbpp"]) if "mbpp" in losses else None,
           "mbpp_note": losses.get("mbpp_note"), "humaneval_results": sampled["results"],
           **{k: v for k, v in sampled.items() if k.startswith("pass@") and "stderr" not in k}}
    row.update({f"{k}_stderr": v for k, v in sampled.items() if k.startswith("pass@") and "stderr" in k})
    if flags is not None:
        clean = lambda doc_id: not flags["flagged"].get(doc_id, False)  # noqa: E731 - one-line predicate
        row["humaneval_clean_bits_per_byte"] = bits_per_byte(losses["humaneval"], clean)
        row["mbpp_clean_bits_per_byte"] = bits_per_byte(losses["mbpp"], clean) if "mbpp" in losses else None
        values = [v for doc_id, v in sampled["per_item"].items() if clean(doc_id)]
        row["humaneval_clean_pass@1"] = sum(values) / len(values) if values else None
    return row


def clean_items(report_path: Path) -> dict:
    """doc_id -> flagged by any method of a contamination report, with its counts per task."""
    from phi_eval.contamination.subsets import splits

    try:
        report = json.loads(Path(report_path).read_text())
        tasks = {task: splits(report, task)["any"] for task in report["tasks"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--contamination {report_path}: not a `phi-eval contamination` report ({e}); "
                         "pass the JSON it writes") from None
    flagged = {doc_id: f for per_task in tasks.values() for doc_id, f in per_task.items()}
    return {"report": str(report_path), "methods": sorted(report.get("methods", {})),
            "counts": {task: {"items": len(v), "flagged": sum(v.values()), "clean": len(v) - sum(v.values())}
                       for task, v in tasks.items()}, "flagged": flagged}


def data_of(checkpoint: Path, run: dict) -> dict:
    """What the data stages reported (teacher, agreement, classifier, filter) and the synthetic
    documents' share of the training tokens, counted with the run's own tokenizer."""
    manifest = json.loads((checkpoint / "data_manifest.json").read_text())
    stages = {stage["stage"]: stage for stage in manifest.get("stages", {}).get("stages", [])}  # data run's summary
    data = {}
    if "annotate" in stages:
        data["annotate"] = {k: annotation_report(stages["annotate"]).get(k) for k in ("annotator", "counts", "scores")}
    if "classify" in stages:
        data["classify"] = stages["classify"]["reports"]["report"].get("agreement")
    if "filter" in stages:
        cut = stages["filter"]["reports"]["cut"]
        data["filter"] = {k: cut.get(k) for k in ("counts", "threshold", "kept_fraction_of_bytes")}
    if "append" in stages:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        tokens = 0
        for path in stages["append"]["settings"]["files"]:
            from phi_eval.data.stage import read_documents

            tokens += sum(len(tokenizer(d["text"], add_special_tokens=False)["input_ids"])
                          for d in read_documents(Path(path)))
        share = tokens / run["corpus_tokens"] if run["corpus_tokens"] else 0.0
        # Training samples the token stream uniformly, so each synthetic token is seen `epochs` times.
        data["synthetic"] = {"files": stages["append"]["settings"]["files"], "tokens": tokens,
                             "share_of_corpus": share, "passes": run["epochs"]}
    return data


def annotation_report(stage: dict) -> dict:
    """The annotate stage's counts and grade histogram, from its shards (a graded document carries
    edu_annotator)."""
    from phi_eval.data.annotate import grades_report
    from phi_eval.data.distributed.shards import shard_files

    documents, grades = 0, []
    for shard in shard_files(Path(stage["output"])):
        with open(shard, encoding="utf-8") as f:
            for line in f:
                document = json.loads(line)
                documents += 1
                if "edu_annotator" in document:
                    grades.append(document)
    return grades_report(documents, grades, stage["settings"])


def side_by_side(specs) -> list[dict]:
    """The talk's prompt and HumanEval/0's, completed greedily by each model."""
    from phi_eval.models import GenerationConfig, GenerationRequest, load_model
    from phi_eval.tasks import TASKS

    humaneval = TASKS["humaneval"].load_docs(None)[0]
    prompts = [("the phi-1.5 talk's prompt", TALK_PROMPT, (), 64),
               (f"{humaneval['doc_id']}", humaneval["prompt"], tuple(TASKS["humaneval"].stop), 128)]
    out = [{"title": title, "prompt": prompt, "completions": []} for title, prompt, _, _ in prompts]
    for spec in specs:
        model = load_model(spec, device="auto")
        requests = [GenerationRequest(prompt, GenerationConfig(max_new_tokens=n, stop=stop))
                    for _, prompt, stop, n in prompts]
        for entry, (_, completion) in zip(out, model.generate(requests, progress=False)):
            entry["completions"].append(completion.text)
    return out
