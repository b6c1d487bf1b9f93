"""Where each site lives in a Hugging Face GPT-2 model (`GPT2LMHeadModel`).

Same layout as `families/llama.py`: (module path template, "input" | "output", tuple index or
None), in the order one forward pass reaches them. GPT-2 computes q, k and v with one fused
`c_attn` module, so they have no module of their own here and are not offered. `embed` is the
token embedding only (as TransformerLens' ``embed.hook_out``); the block-0 input, token plus
position embedding, is ``resid_pre.L0``.

    MODULE_SITES[Component.Z]   # ("transformer.h.{layer}.attn.c_proj", "input", None)
"""

from __future__ import annotations

from interp.core.sites import Component

MODEL_TYPES = ("gpt2",)

MODULE_SITES: dict[Component, tuple[str, str, int | None]] = {
    Component.EMBED: ("transformer.wte", "output", None),
    Component.RESID_PRE: ("transformer.h.{layer}", "input", None),
    Component.Z: ("transformer.h.{layer}.attn.c_proj", "input", None),
    Component.ATTN_OUT: ("transformer.h.{layer}.attn", "output", 0),
    Component.PATTERN: ("transformer.h.{layer}.attn", "output", 1),
    Component.RESID_MID: ("transformer.h.{layer}.ln_2", "input", None),
    Component.MLP_OUT: ("transformer.h.{layer}.mlp", "output", None),
    Component.RESID_POST: ("transformer.h.{layer}", "output", 0),
    Component.RESID_FINAL: ("transformer.ln_f", "input", None),
}
