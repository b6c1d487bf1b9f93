"""Where each site lives in a Hugging Face Granite model (`GraniteForCausalLM`).

Llama module names (`families/llama.py`), but Granite scales inline, between modules:

    resid_pre.L0 = embed_tokens(ids) * embedding_multiplier
    resid_mid    = resid_pre + self_attn(...) * residual_multiplier
    resid_post   = resid_mid + mlp(...) * residual_multiplier

`embed` is the scaled embedding, i.e. the input of layer 0 (TransformerLens' bridge's
``embed.hook_out`` carries the same scaled value). `attn_out` and `mlp_out`, the scaled
contributions to the residual stream in the bridge, are the output of no module (the
attention and MLP modules return them unscaled), so they are not offered here.

    MODULE_SITES[Component.EMBED]   # ("model.layers.0", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("granite",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.layers.0", "input", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.RESID_MID: ("model.layers.{layer}.post_attention_layernorm", "input", None),
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
