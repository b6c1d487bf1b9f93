"""Architecture knowledge as data: `families.toml`, one section per model family (or shared
layout), read here.

A family's table maps each site it offers, a (stack, component) pair, to the Hugging Face module
that carries it: ``(path template, "input" | "output", tuple index or None)``, rows in forward
execution order. Backends that address modules (nnsight text models, Whisper, LLaVA) pick the
table by the HF config's ``model_type``; adding a family is adding a section to the TOML file
(or a name in the `model_types` of a section whose layout it shares).

    >>> module_sites("llama")[Component.Z]
    ('model.layers.{layer}.self_attn.o_proj', 'input', None)
    >>> module_sites("gemma2")[Component.RESID_MID]
    ('model.layers.{layer}.pre_feedforward_layernorm', 'input', None)
    >>> family("whisper").sites[(Stack.DECODER, Component.CROSS_PATTERN)]
    ('model.decoder.layers.{layer}.encoder_attn', 'output', 1)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from interp.core.errors import ModelLoadError
from interp.core.sites import Component, Site, Stack

ModuleSite = tuple[str, str, int | None]  # (path template, "input" | "output", tuple index)
SiteKey = tuple[Stack, Component]

DATA_FILE = Path(__file__).with_name("families.toml")


@dataclass(frozen=True)
class Family:
    """One section of `families.toml`."""

    name: str
    model_types: tuple[str, ...]
    sites: dict[SiteKey, ModuleSite]
    constants: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)

    @property
    def decoder_sites(self) -> dict[Component, ModuleSite]:
        return {c: row for (s, c), row in self.sites.items() if s is Stack.DECODER}

    @property
    def stacks(self) -> tuple[Stack, ...]:
        return tuple(dict.fromkeys(s for s, _ in self.sites))


@cache
def _data() -> dict[str, Any]:
    with DATA_FILE.open("rb") as f:
        return tomllib.load(f)


def _key(text: str) -> SiteKey:
    stack, _, comp = text.rpartition(".")
    return Stack(stack or "decoder"), Component(comp)


def _rows(name: str) -> list[tuple[SiteKey, ModuleSite]]:
    """The family's rows in order: its `like` family's rows, less `drop`, with `sites` replacing
    rows in place; a new row goes just before the next replaced one (else at the end)."""
    sec = _data()[name]
    prefixes = {k: v for k, v in sec.items() if isinstance(v, str) and len(k) == 1}

    def row(raw: list[Any]) -> tuple[SiteKey, ModuleSite]:
        path = raw[1]
        for k, v in prefixes.items():
            path = path.replace("{" + k + "}", v)
        return _key(raw[0]), (path, raw[2], raw[3] if len(raw) > 3 else None)

    base = _rows(sec["like"]) if "like" in sec else []
    if "like" in sec and prefixes:
        raise ValueError(f"families.toml [{name}]: a `like` family takes its prefixes from {sec['like']!r}")
    if "like" in sec:
        prefixes = {k: v for k, v in _data()[sec["like"]].items() if isinstance(v, str) and len(k) == 1}
    drop = {_key(d) for d in sec.get("drop", [])}
    out = [(k, r) for k, r in base if k not in drop]
    pending: list[tuple[SiteKey, ModuleSite]] = []
    for key, value in map(row, sec.get("sites", [])):
        at = next((i for i, (k, _) in enumerate(out) if k == key), None)
        if at is None:
            pending.append((key, value))
            continue
        out[at : at + 1] = [*pending, (key, value)]
        pending = []
    return out + pending


@cache
def family(name: str) -> Family:
    """A family by its section name (e.g. "llama", "whisper", "llava")."""
    if name not in _data() or name == "parallel_if":
        known = ", ".join(k for k in _data() if k != "parallel_if")
        raise ModelLoadError(f"no family {name!r} in families.toml; known: {known}")
    sec = _data()[name]
    return Family(name, tuple(sec["model_types"]), dict(_rows(name)), dict(sec.get("constants", {})),
                  dict(sec.get("modules", {})))


def _decoder_families() -> list[str]:
    return [k for k, v in _data().items() if k not in ("parallel_if", "whisper", "llava") and isinstance(v, dict)]


# HF `config.model_type` -> the family's decoder table.
FAMILIES: dict[str, dict[Component, ModuleSite]] = {
    model_type: family(name).decoder_sites for name in _decoder_families() for model_type in family(name).model_types
}

PARALLEL_IF: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _data()["parallel_if"].items()}


def module_sites(model_type: str | None) -> dict[Component, ModuleSite]:
    """The site table of a family, or `ModelLoadError` naming the supported families."""
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"model family {model_type!r} (HF config.model_type) has no module-site table; "
            f"supported families: {', '.join(sorted(FAMILIES))}. Use backend='transformer_lens' "
            "for other architectures, or add a section to interp/models/families/families.toml."
        )
    return FAMILIES[model_type]


def family_of(hf_model: Any) -> dict[Component, ModuleSite]:
    """The site table for a loaded Hugging Face model (by ``hf_model.config.model_type``),
    without the rows its configuration does not have (`PARALLEL_IF`)."""
    config = getattr(hf_model, "config", None)
    model_type = getattr(config, "model_type", None)
    table = module_sites(model_type)
    if any(getattr(config, flag, False) for flag in PARALLEL_IF.get(str(model_type), ())):
        table = {c: row for c, row in table.items() if c is not Component.RESID_MID}
    return table


def site_key(site: Site) -> SiteKey:
    return site.stack, site.component
