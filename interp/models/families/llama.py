"""Where each site lives in a Hugging Face Llama model (`LlamaForCausalLM`, also SmolLM2).

One row per component: (module path template, "input" | "output", index into a tuple value or
None). Rows are listed in the order one forward pass reaches them, because nnsight 0.8 reads
module values in execution order (reading an earlier one afterwards is an `OutOfOrderError`).
Head components (z, q, k, v) hold the flat (batch, pos, heads * d_head) value; the backend
splits the last axis into heads. q and k are read before the rotary embedding is applied.

    MODULE_SITES[Component.Z]   # ("model.layers.{layer}.self_attn.o_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.ATTN_OUT: ("model.layers.{layer}.self_attn", "output", 0),
    Component.RESID_MID: ("model.layers.{layer}.post_attention_layernorm", "input", None),
    Component.MLP_OUT: ("model.layers.{layer}.mlp", "output", None),
    # Decoder layers returned a tuple before transformers 5; index 0 is used only on a tuple.
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
