"""Where each site lives in a Hugging Face Gemma 2 or Gemma 3 text model (`Gemma2ForCausalLM`,
`Gemma3ForCausalLM`).

Llama module names (`families/llama.py`), but "sandwich" blocks: each sublayer's output is
normed again before the residual add,

    resid_mid  = resid_pre + post_attention_layernorm(self_attn(input_layernorm(resid_pre)))
    resid_post = resid_mid + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(resid_mid)))

so `post_attention_layernorm` is a post-norm on the attention output, not the pre-MLP norm:
`resid_mid` is the input of `pre_feedforward_layernorm`. `attn_out` and `mlp_out` are what the
sublayers add to the residual stream, the post-norms' outputs (as TransformerLens' bridge's
``hook_attn_out`` / ``hook_mlp_out``), not the attention / MLP modules' own outputs. Gemma 3's
q and k are read before its qk-norms and the rotary embedding.

    MODULE_SITES[Component.RESID_MID]   # ("model.layers.{layer}.pre_feedforward_layernorm", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("gemma2", "gemma3_text")

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),  # scaled by sqrt(d_model) inside the module
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.ATTN_OUT: ("model.layers.{layer}.post_attention_layernorm", "output", None),
    Component.RESID_MID: ("model.layers.{layer}.pre_feedforward_layernorm", "input", None),
    Component.MLP_OUT: ("model.layers.{layer}.post_feedforward_layernorm", "output", None),
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
