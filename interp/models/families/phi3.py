"""Where each site lives in a Hugging Face Phi-3 model (`Phi3ForCausalLM`).

The Llama layout (`families/llama.py`) except that q, k and v come out of one fused
`self_attn.qkv_proj` module (and the MLP's gate and up projections out of one `gate_up_proj`),
so q/k/v are not offered.

    MODULE_SITES[Component.Z]   # ("model.layers.{layer}.self_attn.o_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("phi3",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.ATTN_OUT: ("model.layers.{layer}.self_attn", "output", 0),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.RESID_MID: ("model.layers.{layer}.post_attention_layernorm", "input", None),
    Component.MLP_OUT: ("model.layers.{layer}.mlp", "output", None),
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
