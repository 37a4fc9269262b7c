"""Corpus (or the data stages' output) -> tokenizer (trained on the training split only) -> token
streams; the training batches and fixed validation windows drawn from them."""
from __future__ import annotations

from pathlib import Path

import torch

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.train.corpus import collect_corpus
from phi_eval.train.tokenizer import encode_documents, load_tokenizer, train_bpe


def prepare_data(recipe, progress: bool = False):
    """Files (or the corpus the data stages write) -> tokenizer (trained on the training
    split only) -> two token streams, and the manifest of what went in."""
    tc = recipe.training
    stages = None
    if recipe.data.stages is not None:
        from phi_eval.data.distributed.runner import run_pipeline

        # `phi-eval data run`'s engine, one task in this process: the corpus equals the single-process
        # stages' (tests/test_data_run_recipes.py) and a rerun reuses every finished phase.
        work_dir = paths.home() / "data" / recipe.name
        summary = run_pipeline(recipe.data.stages, work_dir, progress=progress)
        corpus = collect_corpus(recipe.data, sources=[Path(summary["corpus"]["path"])])
        # pipeline.json: each stage's settings, shards, document count, reports and datatrove stats.
        stages = {"work_dir": str(work_dir), **summary}
    else:
        corpus = collect_corpus(recipe.data)
    if recipe.tokenizer.train is not None:
        tokenizer = train_bpe(corpus.train, recipe.tokenizer.train.vocab_size, recipe.model.context_length)
    else:
        tokenizer = load_tokenizer(recipe.tokenizer.path)
    train_ids = torch.from_numpy(encode_documents(tokenizer, corpus.train))
    val_ids = torch.from_numpy(encode_documents(tokenizer, corpus.val))
    for split, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < tc.seq_len:
            raise UsageError(f"data: the {split} split has {len(ids)} tokens, fewer than training.seq_len "
                             f"({tc.seq_len}); add files or lower training.seq_len")
    manifest = {**corpus.manifest, "tokens": len(train_ids) + len(val_ids), "val_tokens": len(val_ids)}
    if stages is not None:
        manifest["stages"] = stages
    return tokenizer, train_ids, val_ids, manifest


def validation_windows(val_ids: torch.Tensor, tc) -> torch.Tensor:
    """The same sequences at every evaluation, so val losses compare across steps; spread
    evenly over the split so that no single held-out file dominates."""
    n = min(tc.eval_batches * tc.batch_size, len(val_ids) // tc.seq_len)
    starts = torch.linspace(0, len(val_ids) - tc.seq_len, n).long().tolist()
    return torch.stack([val_ids[s : s + tc.seq_len] for s in starts])


def sample_batch(ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of `seq_len` tokens at random offsets (nanoGPT-style)."""
    starts = torch.randint(0, len(ids) - seq_len + 1, (batch_size,), generator=generator)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
