"""Where each site lives in a Hugging Face GPT-NeoX model (`GPTNeoXForCausalLM`, also Pythia).

Layout as in `families/llama.py`. q, k and v come out of one fused `query_key_value` module,
so they are not offered. With ``use_parallel_residual`` (the default, and Pythia's setting)
attention reads ``input_layernorm(x)`` and the MLP ``post_attention_layernorm(x)`` of the same
block input x, so there is no residual between them; the `resid_mid` row (the input of
`post_attention_layernorm`, which is that residual in the sequential variant) is dropped then
(`PARALLEL_IF` in `families/__init__.py`).

    MODULE_SITES[Component.Z]   # ("gpt_neox.layers.{layer}.attention.dense", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("gpt_neox",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("gpt_neox.embed_in", "output", None),
    Component.RESID_PRE: ("gpt_neox.layers.{layer}", "input", None),
    Component.Z: ("gpt_neox.layers.{layer}.attention.dense", "input", None),
    Component.ATTN_OUT: ("gpt_neox.layers.{layer}.attention", "output", 0),
    Component.PATTERN: ("gpt_neox.layers.{layer}.attention", "output", 1),
    Component.RESID_MID: ("gpt_neox.layers.{layer}.post_attention_layernorm", "input", None),
    Component.MLP_OUT: ("gpt_neox.layers.{layer}.mlp", "output", None),
    Component.RESID_POST: ("gpt_neox.layers.{layer}", "output", 0),
    Component.RESID_FINAL: ("gpt_neox.final_layer_norm", "input", None),
}
