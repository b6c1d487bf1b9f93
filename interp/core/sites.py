"""Typed activation sites.

A `Site` names one activation of a transformer: a component (residual stream, attention output,
a head's `z`, its pattern, ...), the layer, and optionally one head and one position. Each site
has one canonical string form, ``<component>[.L<layer>][.H<head>][.P<pos>]``, which round-trips
through `Site.parse`; backends translate sites to their own hook names from a table, so analyses
never assemble hook names by hand.

    >>> s = Site("z", layer=3, head=5)
    >>> str(s)
    'z.L3.H5'
    >>> Site.parse("resid_pre.L2.P7") == Site("resid_pre", layer=2, position=7)
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import torch

from interp.core.errors import SiteError


class Component(StrEnum):
    EMBED = "embed"  # the token embedding (learned position embeddings are added after it: resid_pre.L0)
    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    MLP_OUT = "mlp_out"
    Z = "z"  # per-head attention output before W_O
    Q = "q"
    K = "k"
    V = "v"
    Q_ROT = "q_rot"  # queries after the positional rotation (= q without rotary embeddings)
    K_ROT = "k_rot"  # keys after the positional rotation (= k without rotary embeddings)
    ATTN_SCORES = "attn_scores"  # masked, scaled scores before the softmax
    PATTERN = "pattern"
    RESID_FINAL = "resid_final"  # input of the final norm


# Axis layout of each component's tensor; None = the component has no such axis.
#                     (head_axis, pos_axis, needs_layer)
_LAYOUT: dict[Component, tuple[int | None, int | None, bool]] = {
    Component.EMBED: (None, 1, False),
    Component.RESID_PRE: (None, 1, True),
    Component.RESID_MID: (None, 1, True),
    Component.RESID_POST: (None, 1, True),
    Component.ATTN_OUT: (None, 1, True),
    Component.MLP_OUT: (None, 1, True),
    Component.Z: (2, 1, True),  # (batch, pos, head, d_head)
    Component.Q: (2, 1, True),
    Component.K: (2, 1, True),
    Component.V: (2, 1, True),
    Component.Q_ROT: (2, 1, True),
    Component.K_ROT: (2, 1, True),
    Component.ATTN_SCORES: (1, 2, True),  # (batch, head, query_pos, key_pos)
    Component.PATTERN: (1, 2, True),  # (batch, head, query_pos, key_pos); pos = query pos
    Component.RESID_FINAL: (None, 1, False),
}

_PATTERN = re.compile(r"^(?P<comp>[a-z_]+)(?:\.L(?P<layer>\d+))?(?:\.H(?P<head>\d+))?(?:\.P(?P<pos>-?\d+))?$")


@dataclass(frozen=True)
class Site:
    component: Component
    layer: int | None = None
    head: int | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        try:
            comp = Component(self.component)
        except ValueError:
            allowed = ", ".join(c.value for c in Component)
            raise SiteError(f"unknown component {self.component!r}; allowed: {allowed}") from None
        object.__setattr__(self, "component", comp)
        head_axis, _, needs_layer = _LAYOUT[comp]
        if needs_layer and self.layer is None:
            raise SiteError(f"site component {comp.value!r} needs a layer")
        if not needs_layer and self.layer is not None:
            raise SiteError(f"site component {comp.value!r} takes no layer")
        if self.head is not None and head_axis is None:
            raise SiteError(f"site component {comp.value!r} has no heads")

    def _key(self) -> tuple:
        def opt(v: int | None) -> tuple[int, int]:
            return (0, 0) if v is None else (1, v)

        return (self.component.value, opt(self.layer), opt(self.head), opt(self.position))

    def __lt__(self, other: Site) -> bool:  # whole-tensor sites sort before their slices
        return self._key() < other._key()

    # -- canonical string form -------------------------------------------------------------
    def __str__(self) -> str:
        s = self.component.value
        if self.layer is not None:
            s += f".L{self.layer}"
        if self.head is not None:
            s += f".H{self.head}"
        if self.position is not None:
            s += f".P{self.position}"
        return s

    @classmethod
    def parse(cls, text: str) -> Site:
        m = _PATTERN.match(text.strip())
        if not m:
            raise SiteError(
                f"cannot parse site {text!r}; expected '<component>[.L<layer>][.H<head>][.P<pos>]', "
                "e.g. 'z.L3.H5' or 'resid_pre.L2.P7'"
            )
        g = m.groupdict()
        return cls(
            Component(g["comp"]) if g["comp"] in Component._value2member_map_ else g["comp"],
            layer=int(g["layer"]) if g["layer"] is not None else None,
            head=int(g["head"]) if g["head"] is not None else None,
            position=int(g["pos"]) if g["pos"] is not None else None,
        )

    # -- the part of the hooked tensor this site addresses ----------------------------------
    @property
    def hook_site(self) -> Site:
        """The whole-tensor site whose hook carries this site (head/position dropped)."""
        return Site(self.component, self.layer)

    @property
    def head_axis(self) -> int | None:
        return _LAYOUT[self.component][0]

    @property
    def pos_axis(self) -> int | None:
        return _LAYOUT[self.component][1]

    def index(self, ndim: int) -> tuple:
        """An index tuple selecting this site's head/position from the hooked tensor."""
        idx: list = [slice(None)] * ndim
        if self.head is not None:
            idx[self.head_axis] = self.head  # type: ignore[index]
        if self.position is not None:
            idx[self.pos_axis] = self.position  # type: ignore[index]
        return tuple(idx)

    def select(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.index(tensor.ndim)]

    def assign(self, tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Return a copy of `tensor` with this site's slice replaced by `value`'s slice.

        `value` has the full hooked shape (or broadcasts to it)."""
        out = tensor.clone()
        idx = self.index(tensor.ndim)
        out[idx] = value.expand_as(tensor)[idx] if value.shape != tensor.shape else value[idx]
        return out


def head_sites(component: Component | str, n_layers: int, n_heads: int) -> list[Site]:
    return [Site(component, layer=l, head=h) for l in range(n_layers) for h in range(n_heads)]  # noqa: E741


def layer_sites(component: Component | str, n_layers: int) -> list[Site]:
    return [Site(component, layer=l) for l in range(n_layers)]  # noqa: E741
