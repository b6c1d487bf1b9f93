"""Tiny random models of every supported decoder family, built from the family's own HF config.

The conformance suite (`tests/conformance/`), `interp check tiny-<family>` and the support
matrix all use these. Each is 3 layers of a small width with everything that makes a family
different switched on and made to matter: norm weights and biases perturbed away from their
initial 1/0, sliding windows shorter than the test prompts, attention and final softcaps,
logit/residual/embedding scalings, qk-norms, partial rotary, parallel blocks, mixtures of
experts. Vocabulary: the SmolLM2 tokenizer's, so every data generator runs on them.

    >>> sorted(FAMILY_CONFIGS)[:3]
    ['cohere', 'falcon', 'gemma']
    >>> hf = build_family("gemma2", vocab_size=49152)
"""

from __future__ import annotations

from typing import Any

import torch

from interp.core.model import HookedModel

# Shared shape: 3 layers, d_model 64, 4 query heads of 16, 2 KV heads where the family has GQA.
_BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=512)
_GQA = dict(_BASE, num_key_value_heads=2)
WINDOW = 4  # shorter than every conformance prompt

# HF `model_type` -> config kwargs on top of the family's defaults.
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_embd=64, n_layer=3, n_head=4, n_positions=512),
    "gpt_neo": dict(hidden_size=64, num_layers=3, num_heads=4, max_position_embeddings=512,
                    attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=WINDOW),
    "gptj": dict(n_embd=64, n_layer=3, n_head=4, n_positions=512, rotary_dim=8),
    "gpt_neox": dict(_BASE, rotary_pct=0.25, use_parallel_residual=True, attention_bias=True),
    "llama": dict(_GQA, attention_bias=True, mlp_bias=True),
    "mistral": dict(_GQA, sliding_window=WINDOW),
    "mixtral": dict(_GQA, sliding_window=WINDOW, num_local_experts=4, num_experts_per_tok=2),
    "qwen2": dict(_GQA, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen2_moe": dict(_GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64, decoder_sparse_step=1),
    "qwen3": dict(_GQA, head_dim=16),
    "gemma": dict(_GQA, head_dim=16),
    "gemma2": dict(_GQA, head_dim=16, sliding_window=WINDOW, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0, query_pre_attn_scalar=12),
    "gemma3_text": dict(_GQA, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=12,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "phi": dict(_BASE, partial_rotary_factor=0.5),
    "phi3": dict(_GQA, sliding_window=WINDOW),
    "olmo": dict(_GQA, clip_qkv=None),
    "olmo2": dict(_GQA),
    "falcon": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_kv_heads=1,
                   multi_query=True, parallel_attn=True, new_decoder_architecture=False, bias=True,
                   alibi=False),
    "stablelm": dict(_GQA, partial_rotary_factor=0.25, qk_layernorm=True, use_qkv_bias=True),
    "starcoder2": dict(_GQA, sliding_window=WINDOW, use_bias=True),
    "granite": dict(_GQA, embedding_multiplier=2.0, logits_scaling=4.0, residual_multiplier=0.5,
                    attention_multiplier=0.3),
    "cohere": dict(_GQA, logit_scale=0.5, use_qk_norm=True),
}


def tiny_family_names() -> list[str]:
    return [f"tiny-{t.replace('_', '-')}" for t in FAMILY_CONFIGS]


def family_of_tiny_name(name: str) -> str | None:
    """'tiny-gemma3-text' -> 'gemma3_text' (None for a name that is not a zoo model)."""
    for t in FAMILY_CONFIGS:
        if name == f"tiny-{t.replace('_', '-')}":
            return t
    return None


def build_family(model_type: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A seeded random causal LM of `model_type`, eager attention, with perturbed norms/biases."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(FAMILY_CONFIGS[model_type])
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **kwargs)
    for tok in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, tok, None) is not None and getattr(config, tok) >= vocab_size:
            setattr(config, tok, 0)
    config._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        # What a saved checkpoint records and TransformerLens picks its adapter by.
        model.config.architectures = [type(model).__name__]
        _perturb(model)
    finally:
        torch.random.set_rng_state(state)
    out: torch.nn.Module = model.eval()
    return out


@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    """Move norm weights/biases and all biases off their init (1 or 0), and give the random
    weights a scale at which attention patterns are not uniform."""
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.add_(torch.randn_like(p) * 0.3)
        elif "embed" in name or "wte" in name or "wpe" in name:
            p.normal_(0, 1.0)
        else:
            p.normal_(0, 0.08)


def load_family(model_type: str, *, backend: str = "transformer_lens", seed: int = 0) -> HookedModel:
    """The zoo model of `model_type` as a hooked model (SmolLM2 tokenizer). A second
    `build_family(model_type, vocab, seed)` gives an identical, independent HF model."""
    from interp.models import smollm2
    from interp.models.loading import _state_digest, _wrap

    tok = smollm2.load_tokenizer()
    hf = build_family(model_type, vocab_size=len(tok), seed=seed)
    for p in hf.parameters():
        p.requires_grad_(False)
    return _wrap(backend, f"tiny-{model_type.replace('_', '-')}", hf, tok, _state_digest(hf))
