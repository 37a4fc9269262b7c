"""A recipe's `model:` section as a transformers PhiConfig / freshly initialised PhiForCausalLM."""
from __future__ import annotations

from transformers import PhiConfig, PhiForCausalLM


def phi_config(spec, vocab_size: int, eos_id: int, bos_id: int | None = None, pad_id: int | None = None) -> PhiConfig:
    """Phi's block: one LayerNorm feeding attention and MLP in parallel, partial rotary,
    gelu_new, untied input and output embeddings (PhiConfig's defaults keep the rest)."""
    return PhiConfig(
        vocab_size=spec.vocab_size or vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.mlp_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,  # plain multi-head attention, as in phi-1
        max_position_embeddings=spec.context_length,
        # transformers 5 keeps the rotary fraction here, not in config.partial_rotary_factor.
        rope_parameters={
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "partial_rotary_factor": spec.rotary_dim / spec.head_dim,
        },
        attention_dropout=spec.dropout,
        resid_pdrop=spec.dropout,
        tie_word_embeddings=False,
        bos_token_id=bos_id if bos_id is not None else eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_model(spec, tokenizer) -> PhiForCausalLM:
    config = phi_config(spec, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id)
    return PhiForCausalLM(config)
