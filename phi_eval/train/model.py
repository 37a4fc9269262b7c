"""A recipe's `model:` section as a freshly initialised transformers PhiForCausalLM."""
from __future__ import annotations

from transformers import PhiConfig, PhiForCausalLM


def build_model(spec, tokenizer) -> PhiForCausalLM:
    """Phi's block: one LayerNorm feeding attention and MLP in parallel, partial rotary,
    gelu_new, untied input and output embeddings (PhiConfig's defaults keep the rest)."""
    eos = tokenizer.eos_token_id
    config = PhiConfig(
        vocab_size=len(tokenizer),
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
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    return PhiForCausalLM(config)
