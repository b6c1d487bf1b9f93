"""Typed activation sites.

A `Site` names one activation of a transformer: a component (residual stream, attention output,
a head's `z`, its pattern, ...), the layer, and optionally one head and one position, in one
stack of the model: the decoder (the default: a causal LM is all decoder), an encoder-decoder's
encoder (Whisper), or a vision-language model's vision tower. Each site has one canonical string
form, ``[<stack>.]<component>[.L<layer>][.H<head>][.P<pos>]`` (the stack written only when it is
not the decoder), which round-trips through `Site.parse`; backends translate sites to their own
hook names or modules from a table, so analyses never assemble hook names by hand.

    >>> s = Site("z", layer=3, head=5)
    >>> str(s)
    'z.L3.H5'
    >>> Site.parse("resid_pre.L2.P7") == Site("resid_pre", layer=2, position=7)
    True
    >>> str(Site("resid_post", layer=1, stack="encoder")), str(Site.parse("decoder.cross_pattern.L3.H2"))
    ('encoder.resid_post.L1', 'cross_pattern.L3.H2')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import torch

from interp.core.errors import SiteError


class Component(StrEnum):
    EMBED = "embed"  # the token embedding (learned position embeddings are added after it: resid_pre.L0)
    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    ATTN_IN = "attn_in"  # the attention's input after its norm: what its q/k/v projections read
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
    # encoder-decoder models (Whisper): the decoder's cross-attention, and a stack's output
    CROSS_PATTERN = "cross_pattern"  # (batch, head, query_pos, key_frame)
    CROSS_ATTN_OUT = "cross_attn_out"  # what cross-attention adds to the residual stream
    OUT = "out"  # the output of a stack's final norm (what cross-attention reads from the encoder)


class Stack(StrEnum):
    DECODER = "decoder"  # a causal LM's only stack; an encoder-decoder's decoder
    ENCODER = "encoder"  # an encoder-decoder's encoder (Whisper's audio encoder)
    VISION = "vision"  # a vision-language model's vision tower


# Axis layout of each component's tensor; None = the component has no such axis.
#                     (head_axis, pos_axis, needs_layer)
_LAYOUT: dict[Component, tuple[int | None, int | None, bool]] = {
    Component.EMBED: (None, 1, False),
    Component.RESID_PRE: (None, 1, True),
    Component.RESID_MID: (None, 1, True),
    Component.RESID_POST: (None, 1, True),
    Component.ATTN_OUT: (None, 1, True),
    Component.ATTN_IN: (None, 1, True),
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
    Component.CROSS_PATTERN: (1, 2, True),
    Component.CROSS_ATTN_OUT: (None, 1, True),
    Component.OUT: (None, 1, False),
}

_STACKS = "|".join(st.value for st in Stack)
_PATTERN = re.compile(rf"^(?:(?P<stack>{_STACKS})\.)?(?P<comp>[a-z_]+)"
                      rf"(?:\.L(?P<layer>\d+))?(?:\.H(?P<head>\d+))?(?:\.P(?P<pos>-?\d+))?$")


E = TypeVar("E", Component, Stack)


def as_component(value: Component | str) -> Component:
    """`value` as a `Component`, or `SiteError` listing the allowed ones."""
    return _member(Component, value, "component")


def as_stack(value: Stack | str) -> Stack:
    """`value` as a `Stack`, or `SiteError` listing the allowed ones."""
    return _member(Stack, value, "stack")


def _member(enum: type[E], value: E | str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise SiteError(f"unknown {what} {value!r}; allowed: {allowed}") from None


@dataclass(frozen=True, init=False)
class Site:
    component: Component
    layer: int | None = None
    head: int | None = None
    position: int | None = None
    stack: Stack = Stack.DECODER

    def __init__(self, component: Component | str, layer: int | None = None, head: int | None = None,
                 position: int | None = None, stack: Stack | str = Stack.DECODER) -> None:
        comp = as_component(component)
        for field, value in (("layer", layer), ("head", head), ("position", position)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise SiteError(f"site {comp.value}: {field} must be an integer or None, got {value!r}")
            object.__setattr__(self, field, value)
        object.__setattr__(self, "component", comp)
        object.__setattr__(self, "stack", as_stack(stack))
        head_axis, _, needs_layer = _LAYOUT[comp]
        if needs_layer and self.layer is None:
            raise SiteError(f"site component {comp.value!r} needs a layer")
        if not needs_layer and self.layer is not None:
            raise SiteError(f"site component {comp.value!r} takes no layer")
        if self.head is not None and head_axis is None:
            raise SiteError(f"site component {comp.value!r} has no heads")

    def _key(self) -> tuple[str, str, tuple[int, int], tuple[int, int], tuple[int, int]]:
        def opt(v: int | None) -> tuple[int, int]:
            return (0, 0) if v is None else (1, v)

        stack = "" if self.stack is Stack.DECODER else self.stack.value
        return (stack, self.component.value, opt(self.layer), opt(self.head), opt(self.position))

    def __lt__(self, other: Site) -> bool:  # whole-tensor sites sort before their slices
        return self._key() < other._key()

    # -- canonical string form -------------------------------------------------------------
    def __str__(self) -> str:
        s = self.component.value if self.stack is Stack.DECODER else f"{self.stack.value}.{self.component.value}"
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
                "e.g. 'z.L3.H5' or 'resid_pre.L2.P7' (prefixed 'encoder.' or 'vision.' for those stacks)"
            )
        g = m.groupdict()
        ints = {k: None if g[k] is None else int(g[k]) for k in ("layer", "head", "pos")}
        return cls(as_component(g["comp"]), layer=ints["layer"], head=ints["head"], position=ints["pos"],
                   stack=as_stack(g["stack"] or "decoder"))

    # -- the part of the hooked tensor this site addresses ----------------------------------
    @property
    def hook_site(self) -> Site:
        """The whole-tensor site whose hook carries this site (head/position dropped)."""
        return Site(self.component, self.layer, stack=self.stack)

    @property
    def head_axis(self) -> int | None:
        return _LAYOUT[self.component][0]

    @property
    def pos_axis(self) -> int | None:
        return _LAYOUT[self.component][1]

    def index(self, ndim: int) -> tuple[int | slice, ...]:
        """An index tuple selecting this site's head/position from the hooked tensor."""
        idx: list[int | slice] = [slice(None)] * ndim
        head_axis, pos_axis, _ = _LAYOUT[self.component]
        if self.head is not None and head_axis is not None:
            idx[head_axis] = self.head
        if self.position is not None and pos_axis is not None:
            idx[pos_axis] = self.position
        return tuple(idx)

    def check_fits(self, tensor: torch.Tensor) -> None:
        """Raise `SiteError` naming the allowed range if this site's head or position lies
        outside the hooked tensor (instead of an IndexError deep inside a forward)."""
        head_axis, pos_axis, _ = _LAYOUT[self.component]
        for what, value, axis in (("head", self.head, head_axis), ("position", self.position, pos_axis)):
            if value is None or axis is None or axis >= tensor.ndim:
                continue
            n = tensor.shape[axis]
            if not -n <= value < n:
                raise SiteError(f"site {self}: {what} {value} out of range {-n}..{n - 1} for this input "
                                f"({n} {what}s)")

    def select(self, tensor: torch.Tensor) -> torch.Tensor:
        self.check_fits(tensor)
        return tensor[self.index(tensor.ndim)]

    def assign(self, tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Return a copy of `tensor` with this site's slice replaced by `value`'s slice.

        `value` has the full hooked shape (or broadcasts to it)."""
        self.check_fits(tensor)
        out = tensor.clone()
        idx = self.index(tensor.ndim)
        out[idx] = value.expand_as(tensor)[idx] if value.shape != tensor.shape else value[idx]
        return out


def head_sites(component: Component | str, n_layers: int, n_heads: int, *,
               stack: Stack | str = Stack.DECODER) -> list[Site]:
    comp, st = as_component(component), as_stack(stack)
    return [Site(comp, layer=li, head=h, stack=st) for li in range(n_layers) for h in range(n_heads)]


def layer_sites(component: Component | str, n_layers: int, *, stack: Stack | str = Stack.DECODER) -> list[Site]:
    comp, st = as_component(component), as_stack(stack)
    return [Site(comp, layer=li, stack=st) for li in range(n_layers)]
