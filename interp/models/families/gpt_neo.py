"""Where each site lives in a Hugging Face GPT-Neo model (`GPTNeoForCausalLM`).

Layout as in `families/llama.py`. The block's `attn` is a thin wrapper around the real attention
module `attn.attention` (global or local, by layer), which owns q/k/v_proj and out_proj and
returns (output, pattern). Sequential pre-LayerNorm blocks: the residual between attention and
MLP is the input of `ln_2`. GPT-Neo has learned absolute positions, no rotary: `embed` is the
token embedding alone (``wte``), the block-0 input is token plus position embedding.

    MODULE_SITES[Component.Z]   # ("transformer.h.{layer}.attn.attention.out_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("gpt_neo",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("transformer.wte", "output", None),
    Component.RESID_PRE: ("transformer.h.{layer}", "input", None),
    Component.Q: ("transformer.h.{layer}.attn.attention.q_proj", "output", None),
    Component.K: ("transformer.h.{layer}.attn.attention.k_proj", "output", None),
    Component.V: ("transformer.h.{layer}.attn.attention.v_proj", "output", None),
    Component.Z: ("transformer.h.{layer}.attn.attention.out_proj", "input", None),
    Component.ATTN_OUT: ("transformer.h.{layer}.attn.attention", "output", 0),
    Component.PATTERN: ("transformer.h.{layer}.attn.attention", "output", 1),
    Component.RESID_MID: ("transformer.h.{layer}.ln_2", "input", None),
    Component.MLP_OUT: ("transformer.h.{layer}.mlp", "output", None),
    Component.RESID_POST: ("transformer.h.{layer}", "output", 0),
    Component.RESID_FINAL: ("transformer.ln_f", "input", None),
}
