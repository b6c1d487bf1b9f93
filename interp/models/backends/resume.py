"""Resuming a forward at a block: capture each block's inputs in one real forward, then call
the blocks directly (`Resumable`, shared by the TransformerLens bridge and the nnsight backend).

`capture` records, through forward pre-hooks on the blocks, the residual entering each block and
the extra arguments the model passes it (attention mask, rotary embeddings, ...), and, where
the blocks' attention calls ``update`` on a ``layer_past`` cache (the bridge's), each block's
keys/values. `resume` runs blocks ``layer..`` on a stacked batch of k variants with those
arguments repeated k times; with ``start_pos`` it feeds only the later positions and prepends
the captured keys/values of the earlier ones (exact when nothing before ``start_pos`` changed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from interp.core.model import BlockInputs

Args = tuple[tuple[Any, ...], dict[str, Any]]
KV = tuple[torch.Tensor, torch.Tensor]

# Block keyword arguments that must not be replayed (per-call state).
_DROP_KWARGS = {"past_key_value", "past_key_values", "cache", "layer_past"}


@dataclass
class BlockState:
    """A resumable backend's private part of `BlockInputs`."""

    per_layer: list[Args]
    kv: list[KV] | None  # per-block keys/values (batch, kv_head, pos, d_head), when resumable at a position


class _KVRecorder:
    """Duck-typed cache: records each layer's keys/values and returns them unchanged."""

    def __init__(self) -> None:
        self.kv: dict[int, KV] = {}

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> KV:
        self.kv[layer_idx] = (k.detach(), v.detach())
        return k, v


class _PrefixKV:
    """Duck-typed cache holding one layer's keys/values for the positions before the resume
    point; the attention prepends them to the new positions' keys/values."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> KV:
        return torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)


def capture(blocks: Sequence[nn.Module], run: Callable[[], Any], batch: int, *, record_kv: bool) -> BlockInputs:
    """Run `run()` (one forward) while recording every block's inputs (and keys/values, by
    handing each block a recording `layer_past`, when `record_kv`)."""
    n = len(blocks)
    per_layer: list[Args | None] = [None] * n
    resid: list[torch.Tensor | None] = [None] * n
    recorder = _KVRecorder() if record_kv else None
    handles = [block.register_forward_pre_hook(_recording_pre(i, block, per_layer, resid, recorder), with_kwargs=True)
               for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    done = [p for p in per_layer if p is not None]
    inputs = [r for r in resid if r is not None]
    if len(done) != n or len(inputs) != n:
        raise RuntimeError("could not capture the inputs of every block")
    kv: list[KV] | None = None
    if recorder is not None and all(i in recorder.kv for i in range(n)) and all(_sliceable(*a) for a in done):
        kv = [recorder.kv[i] for i in range(n)]
    return BlockInputs(batch=batch, resid_pre=inputs, state=BlockState(done, kv), resumes_at_position=kv is not None)


def _recording_pre(i: int, block: nn.Module, per_layer: list[Args | None], resid: list[torch.Tensor | None],
                   recorder: _KVRecorder | None) -> Callable[..., Any]:
    names = _positional_names(block)

    def pre(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        resid[i] = hidden.detach()
        # Name the extra positional arguments so they can be cut by position later.
        extra = dict(zip(names, args[1:], strict=False)) if names is not None else {}
        rest = () if names is not None else tuple(args[1:])
        kw = {k: (None if _is_cache(v) else v) for k, v in {**extra, **kwargs}.items()
              if k != "hidden_states" and k not in _DROP_KWARGS}
        if "use_cache" in kw:
            kw["use_cache"] = False
        per_layer[i] = (tuple(None if _is_cache(a) else a for a in rest), kw)
        if recorder is None:
            return None
        # The live call records keys/values: HF's own cache object is dropped and the
        # attention gets ours as `layer_past` (the name the bridge's attention calls `update` on).
        live_args = tuple(None if _is_cache(a) else a for a in args)
        live_kw = {k: (None if _is_cache(v) else v) for k, v in kwargs.items()}
        live_kw["layer_past"] = recorder
        return live_args, live_kw

    return pre


def resume(blocks: Sequence[nn.Module], layer: int, resid_pre: torch.Tensor, inputs: BlockInputs,
           start_pos: int = 0, end_layer: int | None = None) -> torch.Tensor:
    """Blocks `layer..end_layer` on `resid_pre` (k stacked copies of the captured batch)."""
    batch = inputs.batch
    copies, rem = divmod(resid_pre.shape[0], batch)
    if rem:
        raise ValueError(f"resid_pre batch {resid_pre.shape[0]} is not a multiple of the captured batch {batch}")
    state = inputs.state
    if not isinstance(state, BlockState):
        raise TypeError("these block inputs were not captured by this model (capture_block_inputs)")
    if start_pos and state.kv is None:
        raise NotImplementedError("these block inputs cannot resume at a later position")
    x = resid_pre
    for i in range(layer, len(blocks) if end_layer is None else end_layer):
        args, kwargs = state.per_layer[i]
        args = tuple(_repeat_batch(a, batch, copies) for a in args)
        kwargs = {k: _repeat_batch(v, batch, copies) for k, v in kwargs.items()}
        if start_pos and state.kv is not None:
            kwargs = {k: _slice_positions(k, v, start_pos) for k, v in kwargs.items()}
            k_pre, v_pre = state.kv[i]
            # Always an explicit copy per stacked variant (even for a one-prompt batch,
            # where broadcasting would not apply to the concatenation).
            kwargs["layer_past"] = _PrefixKV(k_pre[:, :, :start_pos].repeat(copies, 1, 1, 1),
                                             v_pre[:, :, :start_pos].repeat(copies, 1, 1, 1))
        out = blocks[i](x, *args, **kwargs)
        x = out[0] if isinstance(out, tuple) else out
    return x


# How each block keyword argument is cut to the positions from `start` on. An argument not in
# this table that carries tensors makes the block inputs non-resumable (correctness first).
_POSITION_SLICERS: dict[str, Callable[[Any, int], Any]] = {
    "attention_mask": lambda v, s: v[..., s:, :] if v.ndim >= 3 else v,  # query rows only
    "position_embeddings": lambda v, s: tuple(t[..., s:, :] for t in v),  # (cos, sin) (.., pos, d)
    "position_ids": lambda v, s: v[..., s:],
    "cache_position": lambda v, s: v[s:],
}


def _is_cache(v: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(v, Cache | _KVRecorder)


def _positional_names(block: nn.Module) -> list[str] | None:
    """Names of the wrapped HF block's parameters after `hidden_states`, or None."""
    target = getattr(block, "original_component", None) or getattr(block, "_original_component", None)
    try:
        params = list(inspect.signature(target.forward).parameters.values())  # type: ignore[union-attr]
    except (TypeError, ValueError, AttributeError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[1:] if names else None


def _has_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) or (isinstance(v, tuple) and any(_has_tensor(t) for t in v))


def _sliceable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if any(_has_tensor(a) for a in args):
        return False
    return all(k in _POSITION_SLICERS or not _has_tensor(v) for k, v in kwargs.items())


def _slice_positions(name: str, v: Any, start: int) -> Any:
    if v is None or name not in _POSITION_SLICERS:
        return v
    return _POSITION_SLICERS[name](v, start)


def _repeat_batch(v: Any, batch: int, copies: int) -> Any:
    """Stack `copies` copies along dim 0 of tensors whose dim 0 is the captured batch."""
    if copies == 1:
        return v
    if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch and batch > 1:
        return v.repeat(copies, *([1] * (v.ndim - 1)))
    if isinstance(v, tuple):
        return tuple(_repeat_batch(t, batch, copies) for t in v)
    return v
