"""A tiny random Llama written as a GGUF file the way llama.cpp's convert_hf_to_gguf.py writes one.

Only what transformers' GGUF loader reads back is written: the `llama.*` hyper-parameters, a byte-level
BPE vocabulary (`tokenizer.ggml.model = "gpt2"`) and the weights under llama.cpp's tensor names, with
the query/key rows permuted for llama.cpp's rotary layout (transformers undoes that permutation on load,
in modeling_gguf_pytorch_utils.LlamaTensorProcessor).
"""
from __future__ import annotations

import json
from pathlib import Path


def make_tiny_llama(seed: int = 0, vocab_size: int = 512):
    """(model, tokenizer): a random-weight 2-layer Llama with grouped-query attention and untied embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny import train_tokenizer

    tokenizer = train_tokenizer(vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         initializer_range=0.1, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms start at exactly 1; make them distinct so a swapped norm would show
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
    return model, tokenizer


def _permute_rotary(weights, n_head: int, n_head_kv: int | None):
    """llama.cpp's LlamaModel.permute: the rows of q/k go from HF's half-split rotary layout to interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_llama_gguf(model, tokenizer, path: Path, *, float_type: str = "F32") -> Path:
    """Write `model` and `tokenizer` to `path` as a GGUF file; matrices in `float_type` (F32 or F16)."""
    import numpy as np
    from gguf import MODEL_ARCH, GGMLQuantizationType, GGUFWriter, TokenType, get_tensor_name_map

    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]) if getattr(config, "rope_parameters", None)
                              else float(config.rope_theta))
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(1 if float_type == "F16" else 0)  # LlamaFileType.ALL_F32 / MOSTLY_F16

    # The vocabulary in id order, spelled in the byte-level alphabet as tokenizer.json spells it.
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids must be dense"
    special = set(tokenizer.all_special_tokens)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)

    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise KeyError(f"no GGUF name for {hf_name}")
        data = tensor.detach().float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute_rotary(data, config.num_attention_heads, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute_rotary(data, config.num_attention_heads, config.num_key_value_heads)
        if float_type == "F16" and data.ndim > 1:  # llama.cpp keeps 1-D tensors (norms) in F32
            writer.add_tensor(f"{gguf_name}.{suffix}", data.astype(np.float16), raw_dtype=GGMLQuantizationType.F16)
        else:
            writer.add_tensor(f"{gguf_name}.{suffix}", np.ascontiguousarray(data, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
