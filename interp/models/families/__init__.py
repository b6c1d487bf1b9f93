"""Architecture knowledge as data: one module per model family.

Each family module defines `MODULE_SITES`, a table from `Component` to the Hugging Face module
that carries it: ``(path template, "input" | "output", tuple index or None)``, rows in forward
execution order. Backends that read modules directly (nnsight) pick the table by the HF config's
``model_type``; adding a family is adding a file and a line in `FAMILIES`.

    >>> module_sites("llama")[Component.Z]
    ('model.layers.{layer}.self_attn.o_proj', 'input', None)
"""

from __future__ import annotations

from interp.core.errors import ModelLoadError
from interp.core.sites import Component
from interp.models.families import gpt2, llama

ModuleSite = tuple[str, str, int | None]  # (path template, "input" | "output", tuple index)

# HF `config.model_type` -> the family's table.
FAMILIES: dict[str, dict[Component, ModuleSite]] = {
    "llama": llama.MODULE_SITES,
    "gpt2": gpt2.MODULE_SITES,
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
    """The site table for a loaded Hugging Face model (by ``hf_model.config.model_type``)."""
    return module_sites(getattr(getattr(hf_model, "config", None), "model_type", None))
