"""Tiny random models (and a byte-level BPE tokenizer) built offline for tests."""
from __future__ import annotations

import sysconfig
from pathlib import Path


def train_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text() for name in ("textwrap.py", "heapq.py", "bisect.py", "string.py")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")


def make_tiny_phi(directory: Path, seed: int = 0, vocab_size: int = 512, context: int = 2048) -> Path:
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    tokenizer = train_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=context, partial_rotary_factor=0.5,
                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.eos_token_id)
    model = PhiForCausalLM(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_mbpp_fixture(root: Path) -> Path:
    """MBPP's layout (mbpp/mbpp.jsonl) with generated problems: ids 1-510, each "return x + k"."""
    import json

    (root / "mbpp").mkdir(parents=True, exist_ok=True)
    with open(root / "mbpp" / "mbpp.jsonl", "w") as f:
        for i in range(1, 511):
            f.write(json.dumps({
                "text": f"Write a function to add {i} to a number.",
                "code": f"def add_{i}(x):\r\n    return x + {i}",
                "task_id": i,
                "test_setup_code": "",
                "test_list": [f"assert add_{i}({j}) == {j + i}" for j in range(3)],
                "challenge_test_list": [],
            }) + "\n")
    return root
