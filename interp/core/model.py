"""The port between analyses and models: `HookedModel`, a small protocol.

Every model (text decoders through the TransformerLens bridge or nnsight, Whisper, LLaVA) offers
the same few things: its `spec`, the sites it has (`validate_site`), one hook mechanism
(`add_hook`, and `hooks` for temporary ones, `interp.core.hooks`) and a `forward`. Everything
else is an optional capability (`interp.core.capabilities`: resuming a forward at a block,
incremental decoding, unembedding / DLA weights, audio input, image input), which an analysis
asks for by type and gets, or an `UnsupportedError` naming what is missing:

    model = load_model("tiny-llama")
    logits, cache = model.run_with_cache(tokens, [Site("z", layer=1)])
    resumable = require(model, Resumable, "path patching")
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from interp.core.errors import SiteError
from interp.core.hooks import Handle, HookFn
from interp.core.sites import Component, Site, Stack


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    architecture: str
    n_ctx: int | None = None  # the longest input the model takes (positions), when known


class SpecLike(Protocol):
    """What every model's spec says (text, speech and vision specs all do)."""

    @property
    def n_heads(self) -> int: ...
    @property
    def d_model(self) -> int: ...
    @property
    def d_head(self) -> int: ...
    @property
    def architecture(self) -> str: ...


@dataclass(frozen=True)
class FinalNorm:
    """The final normalisation, enough to apply it with a frozen scale (DLA)."""

    kind: str  # "rms" | "layernorm"
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float


@dataclass
class BlockInputs:
    """What a resumable model captured from one real forward so that a forward can resume at
    any block with a batch made of several copies of that input. Analyses read `batch`,
    `resid_pre` and `resumes_at_position`; `state` belongs to the backend that made it (the
    blocks' extra arguments, the attention keys/values)."""

    batch: int
    resid_pre: list[torch.Tensor]  # the residual entering each block in that forward
    state: Any = None
    resumes_at_position: bool = False  # whether `forward_from(start_pos > 0)` is possible


@runtime_checkable
class HookedModel(Protocol):
    """The port every model implements (see the module docstring)."""

    name: str
    backend: str
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str | None

    @property
    def spec(self) -> Any: ...  # a `ModelSpec` for text models; `SpecLike` for all

    def validate_site(self, site: Site) -> None:
        """Raise `SiteError` if `site` (its stack, layer, head, position) does not exist here."""

    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        """Hook the tensor carrying `site`: `fn(tensor, site)` may return a replacement."""

    def hooks(self, hooks: Sequence[tuple[Site, HookFn]]) -> AbstractContextManager[None]:
        """Temporary hooks, removed in `finally` (`interp.core.hooks.temporary_hooks`)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits of one forward (text: tokens; speech: features and decoder ids)."""


def check_site_range(site: Site, *, n_layers: int, n_heads: int, n_ctx: int | None,
                     stacks: Sequence[Stack] = (Stack.DECODER,), what: str = "this model") -> None:
    """`SiteError` naming the allowed range when `site`'s stack, layer, head or position cannot
    exist in a model of this shape (checked before any forward)."""
    if site.stack not in stacks:
        raise SiteError(f"site {site}: {what} has no {site.stack.value} stack; its stacks: "
                        f"{', '.join(s.value for s in stacks)}")
    if site.layer is not None and not 0 <= site.layer < n_layers:
        raise SiteError(f"site {site}: layer {site.layer} out of range 0..{n_layers - 1}")
    if site.head is not None and not 0 <= site.head < n_heads:
        raise SiteError(f"site {site}: head {site.head} out of range 0..{n_heads - 1}")
    if site.position is not None and n_ctx is not None and not -n_ctx <= site.position < n_ctx:
        raise SiteError(f"site {site}: position {site.position} out of range {-n_ctx}..{n_ctx - 1} "
                        f"(the model takes at most {n_ctx} positions)")


KV_COMPONENTS = (Component.K, Component.V, Component.K_ROT)


def apply_final_norm(x: torch.Tensor, norm: FinalNorm) -> torch.Tensor:
    if norm.kind == "rms":
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + norm.eps) * norm.weight
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    out = (x - mu) * torch.rsqrt(var + norm.eps) * norm.weight
    return out + norm.bias if norm.bias is not None else out
