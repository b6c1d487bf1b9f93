"""Where each site lives in a Hugging Face GPT-J model (`GPTJForCausalLM`).

Layout as in `families/llama.py`. GPT-J blocks are parallel: attention and MLP both read
``ln_1(resid_pre)`` and ``resid_post = resid_pre + attn_out + mlp_out``, so there is no
residual between them and `resid_mid` is not offered. q/k/v are the separate projections'
outputs, before the (partial, interleaved) rotary embedding.

    MODULE_SITES[Component.Z]   # ("transformer.h.{layer}.attn.out_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("gptj",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("transformer.wte", "output", None),
    Component.RESID_PRE: ("transformer.h.{layer}", "input", None),
    Component.Q: ("transformer.h.{layer}.attn.q_proj", "output", None),
    Component.K: ("transformer.h.{layer}.attn.k_proj", "output", None),
    Component.V: ("transformer.h.{layer}.attn.v_proj", "output", None),
    Component.Z: ("transformer.h.{layer}.attn.out_proj", "input", None),
    Component.ATTN_OUT: ("transformer.h.{layer}.attn", "output", 0),
    Component.PATTERN: ("transformer.h.{layer}.attn", "output", 1),
    Component.MLP_OUT: ("transformer.h.{layer}.mlp", "output", None),
    Component.RESID_POST: ("transformer.h.{layer}", "output", 0),
    Component.RESID_FINAL: ("transformer.ln_f", "input", None),
}
