"""Hooks on Hugging Face modules named by a family table: the one write path of every backend
that addresses sites by module (nnsight text models, Whisper, LLaVA).

A table row says where a site's tensor lives: ``(module path, "input" | "output", tuple index
or None)``. `add_module_hook` puts a plain torch (pre-)hook there that hands the hook function
the tensor in the site's layout (head components split into (..., head, d_head)) and writes a
returned replacement back in the module's layout. The value is copied before the function sees
it, so a later in-place update by the model (Falcon adds the attention output into the MLP's
output tensor) does not reach a cached copy.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from interp.core.hooks import Handle, HookFn
from interp.core.sites import Site

ModuleSite = tuple[str, str, int | None]  # (path template, "input" | "output", tuple index)


def add_module_hook(root: nn.Module, row: ModuleSite, site: Site, fn: HookFn, *, d_head: int | None) -> Handle:
    """Hook `row`'s module value (formatted with `site.layer`); `d_head` splits the last axis
    into heads (None: the value is already in the site's layout)."""
    path, io, index = row
    module = root.get_submodule(path.format(layer=site.layer))
    whole = site.hook_site

    def call(value: torch.Tensor) -> torch.Tensor | None:
        shaped = value.view(*value.shape[:-1], -1, d_head) if d_head is not None else value
        new = fn(shaped.clone(), whole)
        return None if new is None else new.reshape(value.shape).to(value.dtype)

    if io == "input":
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = call(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(iter(kwargs))
            new = call(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
        tupled = index is not None and isinstance(out, tuple | list)
        value = out[index] if tupled else out
        if not isinstance(value, torch.Tensor):
            return None
        new = call(value)
        if new is None:
            return None
        if tupled and index is not None:
            return type(out)((*out[:index], new, *out[index + 1:]))
        return new

    return module.register_forward_hook(post)


class _Counting(Protocol):
    _live_hooks: int


class CountedHandle:
    """A hook handle that keeps its model's count of live hooks (reads go through hooks, not a
    trace, while any are attached)."""

    def __init__(self, owner: _Counting, handle: Handle) -> None:
        self.owner, self.handle = owner, handle
        owner._live_hooks += 1

    def remove(self) -> None:
        self.handle.remove()
        self.owner._live_hooks -= 1
