"""Architecture knowledge as data: one module per model family (or per shared layout).

Each decoder family module defines `MODULE_SITES`, a table from `Component` to the Hugging Face
module that carries it: ``(path template, "input" | "output", tuple index or None)``, rows in
forward execution order, and `MODEL_TYPES`, the HF ``config.model_type`` values it describes.
Backends that read modules directly (nnsight) pick the table by the HF config's ``model_type``;
adding a family is adding a file and its module in `_DECODERS` (or a name in the `MODEL_TYPES`
of a table whose layout it shares).

    >>> module_sites("llama")[Component.Z]
    ('model.layers.{layer}.self_attn.o_proj', 'input', None)
    >>> module_sites("gemma2")[Component.RESID_MID]
    ('model.layers.{layer}.pre_feedforward_layernorm', 'input', None)
"""

from __future__ import annotations

from interp.core.errors import ModelLoadError
from interp.core.sites import Component
from interp.models.families import (
    cohere,
    falcon,
    gemma2,
    gpt2,
    gpt_neo,
    gpt_neox,
    gptj,
    granite,
    llama,
    olmo2,
    phi,
    phi3,
)

ModuleSite = tuple[str, str, int | None]  # (path template, "input" | "output", tuple index)

_DECODERS = (llama, gpt2, gpt_neo, gptj, gpt_neox, falcon, phi, phi3, cohere, gemma2, olmo2, granite)

# HF `config.model_type` -> the family's table.
FAMILIES: dict[str, dict[Component, ModuleSite]] = {
    model_type: mod.MODULE_SITES for mod in _DECODERS for model_type in mod.MODEL_TYPES
}

# Families whose block is parallel (attention and MLP both read the block input, so there is no
# residual between them) when any of these config flags is true: their `resid_mid` row, the
# pre-MLP norm's input in the sequential variant, is dropped then. Always-parallel families
# (GPT-J, Phi, Cohere) have no such row at all.
PARALLEL_IF: dict[str, tuple[str, ...]] = {
    "gpt_neox": ("use_parallel_residual",),
    "stablelm": ("use_parallel_residual",),
    "falcon": ("parallel_attn", "new_decoder_architecture"),
}


def module_sites(model_type: str | None) -> dict[Component, ModuleSite]:
    """The site table of a family, or `ModelLoadError` naming the supported families."""
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"model family {model_type!r} (HF config.model_type) has no module-site table; "
            f"supported families: {', '.join(sorted(FAMILIES))}. Use backend='transformer_lens' "
            "for other architectures, or add a table in interp/models/families/."
        )
    return FAMILIES[model_type]


def family_of(hf_model) -> dict[Component, ModuleSite]:
    """The site table for a loaded Hugging Face model (by ``hf_model.config.model_type``),
    without the rows its configuration does not have (`PARALLEL_IF`)."""
    config = getattr(hf_model, "config", None)
    model_type = getattr(config, "model_type", None)
    table = module_sites(model_type)
    if any(getattr(config, flag, False) for flag in PARALLEL_IF.get(model_type, ())):
        table = {c: row for c, row in table.items() if c is not Component.RESID_MID}
    return table
