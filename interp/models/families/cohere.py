"""Where each site lives in a Hugging Face Cohere model (`CohereForCausalLM`, Command-R).

Llama module names (`families/llama.py`), but Cohere blocks are parallel: attention and MLP
both read ``input_layernorm(resid_pre)`` and there is no `post_attention_layernorm`, so
`resid_mid` is not offered. q and k are read before the optional per-head qk LayerNorms and
the rotary embedding.

    MODULE_SITES[Component.Z]   # ("model.layers.{layer}.self_attn.o_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("cohere",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.ATTN_OUT: ("model.layers.{layer}.self_attn", "output", 0),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.MLP_OUT: ("model.layers.{layer}.mlp", "output", None),
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
