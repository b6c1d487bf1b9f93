"""Tiny random models built from a config, for fast tests (no download, seeded).

They use the SmolLM2 tokenizer, so every data generator works on them unchanged; the vocab is
the tokenizer's, the rest is small.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

# Architecture knowledge as data: name -> (config class, model class, config kwargs).
TINY_CONFIGS = {
    "tiny-llama": (
        LlamaConfig,
        LlamaForCausalLM,
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True),
    ),
    "tiny-gpt2": (
        GPT2Config,
        GPT2LMHeadModel,
        dict(n_embd=64, n_layer=4, n_head=4, n_positions=256),
    ),
}


def build_tiny(name: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    from interp.models.zoo import build_family, family_of_tiny_name

    if name not in TINY_CONFIGS and (family := family_of_tiny_name(name)) is not None:
        return build_family(family, vocab_size, seed)
    config_cls, model_cls, kwargs = TINY_CONFIGS[name]
    config = config_cls(vocab_size=vocab_size, **kwargs)
    config._attn_implementation = "eager"
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = model_cls(config)
    finally:
        torch.random.set_rng_state(gen_state)
    out: torch.nn.Module = model.eval()
    return out
