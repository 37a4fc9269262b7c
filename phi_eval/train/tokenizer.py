"""The recipe's tokenizer: train a byte-level BPE on the corpus, or load an existing one;
and turn documents into one token stream.

Byte-level BPE maps every byte to a token before merging, so any source file —
tabs, trailing spaces, CRLF, non-ASCII — decodes back to exactly itself.
"""
from __future__ import annotations

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from phi_eval.errors import UsageError

END_OF_TEXT = "<|endoftext|>"

# What BPE may merge within: newline runs, other whitespace runs (indentation), and words
# or punctuation runs each with at most one *trailing* space. GPT-2 puts the space in
# front of the next word instead, so a prompt ending in "def " or "\n" would split
# differently from the same text in training; here prompts that end at a space, a
# newline or an indent split exactly as the training text did.
PIECES = r"\n+|[^\S\n]+|\w+ ?|[^\w\s]+ ?"


def train_bpe(texts: list[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with <|endoftext|> (id 0) as bos, eos and pad."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # it would turn "a ." into "a." and break code
    )


def load_tokenizer(path: str):
    """An existing tokenizer (local dir or hub id); it must have an eos token to separate documents."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"tokenizer.path: cannot load {path!r} ({first_line}); fix the recipe") from None
    if tokenizer.eos_token_id is None:
        raise UsageError(f"tokenizer.path: {path!r} has no eos token to separate documents; pick another tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_documents(tokenizer, texts: list[str]) -> np.ndarray:
    """All documents as one stream, each followed by eos (GPT-2-style packing)."""
    # verbose=False: documents longer than the context are expected here, not worth a warning.
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return np.concatenate([np.array(doc + [eos], dtype=np.int64) for doc in ids])
