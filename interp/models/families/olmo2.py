"""Where each site lives in a Hugging Face OLMo 2 model (`Olmo2ForCausalLM`).

Llama module names (`families/llama.py`), but OLMo 2 has no pre-norms: each sublayer reads the
residual stream itself and its output is normed before the residual add,

    resid_mid  = resid_pre + post_attention_layernorm(self_attn(resid_pre))
    resid_post = resid_mid + post_feedforward_layernorm(mlp(resid_mid))

so `post_attention_layernorm` is a post-norm on the attention output, and `resid_mid` is the
input of the MLP itself. `attn_out` and `mlp_out` are what the sublayers add to the residual
stream, the post-norms' outputs (as TransformerLens' bridge's ``hook_attn_out`` /
``hook_mlp_out``). q and k are read before OLMo 2's qk-norms (over all heads) and the rotary
embedding.

    MODULE_SITES[Component.RESID_MID]   # ("model.layers.{layer}.mlp", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("olmo2",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.ATTN_OUT: ("model.layers.{layer}.post_attention_layernorm", "output", None),
    Component.RESID_MID: ("model.layers.{layer}.mlp", "input", None),
    Component.MLP_OUT: ("model.layers.{layer}.post_feedforward_layernorm", "output", None),
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
