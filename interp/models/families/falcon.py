"""Where each site lives in a Hugging Face Falcon model (`FalconForCausalLM`).

Layout as in `families/llama.py`. q, k and v come out of one fused `query_key_value` module
(multi-query: one key/value head), so they are not offered. With ``parallel_attn`` (Falcon-7B)
or the new decoder architecture (40B/180B) attention and MLP both read the normed block input:
no residual between them, and the `resid_mid` row (the input of `post_attention_layernorm`,
present only in the sequential variant) is dropped (`PARALLEL_IF` in `families/__init__.py`).

Falcon adds the attention output to the MLP's output tensor in place; the backend reads a copy
of every module value at the moment the module returns, so `mlp_out` is the MLP's own output.

    MODULE_SITES[Component.Z]   # ("transformer.h.{layer}.self_attention.dense", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("falcon",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("transformer.word_embeddings", "output", None),
    Component.RESID_PRE: ("transformer.h.{layer}", "input", None),
    Component.Z: ("transformer.h.{layer}.self_attention.dense", "input", None),
    Component.ATTN_OUT: ("transformer.h.{layer}.self_attention", "output", 0),
    Component.PATTERN: ("transformer.h.{layer}.self_attention", "output", 1),
    Component.RESID_MID: ("transformer.h.{layer}.post_attention_layernorm", "input", None),
    Component.MLP_OUT: ("transformer.h.{layer}.mlp", "output", None),
    Component.RESID_POST: ("transformer.h.{layer}", "output", 0),
    Component.RESID_FINAL: ("transformer.ln_f", "input", None),
}
