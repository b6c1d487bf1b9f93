"""Temporary hooks and selective caching, independent of any model family or backend.

Every hook an analysis adds goes through `temporary_hooks`, which removes it in `finally`:
an analysis that raises leaves the model clean (the TransformerLens `hooks()` pattern). A hook
function receives the whole hooked tensor and the `Site`, and returns a replacement or None.

    with temporary_hooks(model, [(Site("z", layer=3), zero_head_5)]):
        logits = model.forward(tokens)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch

from interp.core.sites import Site

HookFn = Callable[[torch.Tensor, Site], torch.Tensor | None]


class Handle(Protocol):
    def remove(self) -> None: ...


class Hookable(Protocol):
    """What a backend offers the core: add one hook on the tensor carrying `site`."""

    def add_hook(self, site: Site, fn: HookFn) -> Handle: ...


@contextmanager
def temporary_hooks(model: Hookable, hooks: Sequence[tuple[Site, HookFn]]) -> Iterator[None]:
    handles: list[Handle] = []
    try:
        for site, fn in hooks:
            handles.append(model.add_hook(site, fn))
        yield
    finally:
        for h in reversed(handles):
            h.remove()


def site_patch_hook(site: Site, source: torch.Tensor) -> HookFn:
    """A hook writing `source`'s values (full hooked shape) into `site`'s head/position slice."""

    def fn(t: torch.Tensor, _: Site) -> torch.Tensor:
        return site.assign(t, source.to(t.dtype))

    return fn


def caching_hooks(sites: Sequence[Site], store: dict[Site, torch.Tensor], *,
                  detach: bool = True) -> list[tuple[Site, HookFn]]:
    """Hooks that store only the asked-for sites (each selected to its head/position)."""

    def make(site: Site) -> HookFn:
        def fn(t: torch.Tensor, _: Site) -> None:
            v = site.select(t)
            store[site] = v.detach() if detach else v

        return fn

    return [(site.hook_site, make(site)) for site in sites]
