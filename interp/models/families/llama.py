"""Where each site lives in a Hugging Face Llama-layout model (`LlamaForCausalLM`, also SmolLM2).

One row per component: (module path template, "input" | "output", index into a tuple value or
None). Rows are listed in the order one forward pass reaches them, because nnsight 0.8 reads
module values in execution order (reading an earlier one afterwards is an `OutOfOrderError`).
Head components (z, q, k, v) hold the flat (batch, pos, heads * d_head) value; the backend
splits the last axis into heads. q and k are read before the rotary embedding (and before any
qk-norm) is applied. The pattern is the attention module's second output, the softmax weights
(batch, head, query, key), which only eager attention returns.

The same modules, under the same names, make up Mistral, Mixtral and Qwen2-MoE (their `mlp` is
the sparse mixture block, whose output is the routed sum), Qwen2, Qwen3, Gemma, OLMo, Starcoder2
(`mlp` holds c_fc/c_proj) and StableLM (sequential unless `use_parallel_residual`; see
`PARALLEL_IF` in `families/__init__.py`).

    MODULE_SITES[Component.Z]   # ("model.layers.{layer}.self_attn.o_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "olmo", "starcoder2",
               "stablelm")

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("model.embed_tokens", "output", None),
    Component.RESID_PRE: ("model.layers.{layer}", "input", None),
    Component.Q: ("model.layers.{layer}.self_attn.q_proj", "output", None),
    Component.K: ("model.layers.{layer}.self_attn.k_proj", "output", None),
    Component.V: ("model.layers.{layer}.self_attn.v_proj", "output", None),
    Component.Z: ("model.layers.{layer}.self_attn.o_proj", "input", None),
    Component.ATTN_OUT: ("model.layers.{layer}.self_attn", "output", 0),
    Component.PATTERN: ("model.layers.{layer}.self_attn", "output", 1),
    Component.RESID_MID: ("model.layers.{layer}.post_attention_layernorm", "input", None),
    Component.MLP_OUT: ("model.layers.{layer}.mlp", "output", None),
    # Decoder layers returned a tuple before transformers 5; index 0 is used only on a tuple.
    Component.RESID_POST: ("model.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("model.norm", "input", None),
}
