"""Head ablation: replace chosen heads' outputs for the duration of a `with` block.

A head's output is its `z` (the attention-weighted values, before W_O; `Site("z", layer)`,
shape (batch, pos, head, d_head)). Ablating it at z removes exactly that head's write into the
residual stream (W_O is linear, so z = 0 is the head's output set to 0 apart from the shared
o_proj bias, which no single head owns). Used for PH3 pruning (Jin et al. 2024, memory/context
heads) and for masking retrieval heads (Wu et al. 2024).

Modes (`ABLATION_MODES`):

- ``"zero"``: z[:, :, head] = 0 at every position (PH3's "prune": no weight update).
- ``"mean"``: z[:, :, head] = the head's mean z over a reference dataset (`head_means`), at every
  position: keeps the head's average (bias-like) contribution and removes only what depends on
  the prompt (Wang et al. 2022 use mean ablation for this reason).
- ``"uniform"``: the head's query is set to 0 (`Site("q_rot", layer)`, after the rotary
  embedding), so all its attention scores are 0 and its pattern is uniform over the causal
  window: the head still writes the average of the values it can see. This is how Wu et al.
  (2024, `needle_in_haystack_with_mask.py`) "mask" retrieval heads: the head can no longer
  choose where to look, but its output is not removed.

Grouped-query attention needs no care here: z is per *query* head (its own pattern times its
KV group's values), so one query head is ablated without touching the others of its group.

    means = head_means(model, [pb.clean for pb in pairs.by_length()])
    with ablated_heads(model, [(14, 3), (20, 1)], mode="mean", means=means):
        logits = model.forward(tokens)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch

from interp.core.errors import InterpError
from interp.core.hooks import HookFn
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Int, Tensor

__all__ = ["ABLATION_MODES", "ablated_heads", "ablation_hooks", "head_means", "matched_random_heads"]

ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "uniform")

HeadMeans = Float[Tensor, "layer head d_head"]


def _check_heads(model: HookedModel, heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    L, H = model.spec.n_layers, model.spec.n_heads
    out = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise InterpError(f"a head is a (layer, head) pair of integers, got {item!r}") from None
        if not (0 <= layer < L and 0 <= head < H):
            raise InterpError(
                f"head ({layer}, {head}) is outside {model.name} "
                f"(layers 0..{L - 1}, heads 0..{H - 1})"
            )
        out.append((layer, head))
    return out


def _check_means(model: HookedModel, mode: str, means: HeadMeans | None) -> None:
    if mode != "mean":
        if means is not None:
            raise InterpError(f"means are only used by mode 'mean', not {mode!r}")
        return
    want = (model.spec.n_layers, model.spec.n_heads, model.spec.d_head)
    if means is None:
        raise InterpError("mode 'mean' needs means: a (layer, head, d_head) tensor from head_means()")
    if tuple(means.shape) != want:
        raise InterpError(f"means has shape {tuple(means.shape)}; expected (layer, head, d_head) = {want}")


def ablation_hooks(
    model: HookedModel,
    heads: Sequence[tuple[int, int]],
    mode: str = "zero",
    means: HeadMeans | None = None,
) -> list[tuple[Site, HookFn]]:
    """The hooks `ablated_heads` installs (one per layer with an ablated head), for callers that
    combine them with other hooks in one `model.hooks(...)`."""
    if mode not in ABLATION_MODES:
        raise InterpError(f"unknown ablation mode {mode!r}; allowed: {', '.join(ABLATION_MODES)}")
    checked = _check_heads(model, heads)
    _check_means(model, mode, means)
    by_layer: dict[int, list[int]] = {}
    for layer, head in checked:
        if head not in by_layer.setdefault(layer, []):
            by_layer[layer].append(head)

    if mode == "uniform":
        return [(Site("q_rot", layer=layer), _zero_query(hs)) for layer, hs in sorted(by_layer.items())]

    def make(layer: int, hs: list[int]) -> HookFn:
        def fn(z: torch.Tensor, _site: Site) -> torch.Tensor:
            z = z.clone()  # (batch, pos, head, d_head)
            if mode == "zero":
                z[:, :, hs] = 0
            else:
                z[:, :, hs] = means[layer, hs].to(z.device, z.dtype)  # type: ignore[index]
            return z

        return fn

    return [(Site("z", layer=layer), make(layer, hs)) for layer, hs in sorted(by_layer.items())]


def _zero_query(hs: list[int]) -> HookFn:
    def fn(q: torch.Tensor, _site: Site) -> torch.Tensor:
        q = q.clone()  # (batch, pos, head, d_head)
        q[:, :, hs] = 0
        return q

    return fn


@contextmanager
def ablated_heads(
    model: HookedModel,
    heads: Sequence[tuple[int, int]],
    mode: str = "zero",
    means: HeadMeans | None = None,
) -> Iterator[None]:
    """Within the block, every forward of `model` runs with `heads` ((layer, head) pairs)
    ablated by `mode`; the hooks are removed on exit, also when the block raises. An empty
    `heads` ablates nothing."""
    with model.hooks(ablation_hooks(model, heads, mode, means)):
        yield


@torch.no_grad()
def head_means(
    model: HookedModel,
    token_batches: Iterable[Int[Tensor, "batch pos"]],
    *,
    position: int | None = None,
) -> HeadMeans:
    """Each head's mean z over a reference dataset: (layer, head, d_head).

    `token_batches` yields equal-length token rows (e.g. `pb.clean` of each `PairBatch`); the
    mean is over every prompt and position (weighted by token count), or over one `position`
    (e.g. -1, the last token) of each prompt."""
    L = model.spec.n_layers
    sites = [Site("z", layer=layer) for layer in range(L)]
    total: torch.Tensor | None = None
    count = 0
    for tokens in token_batches:
        _, cache = model.run_with_cache(tokens.to(model.device), sites)
        z = torch.stack([cache[s] for s in sites])  # (layer, batch, pos, head, d_head)
        if position is not None:
            z = z[:, :, position : position + 1 if position != -1 else None]
        part = z.float().sum((1, 2)).cpu()  # (layer, head, d_head)
        total = part if total is None else total + part
        count += z.shape[1] * z.shape[2]
    if total is None or count == 0:
        raise InterpError("head_means got no token batches; give at least one (batch, pos) tensor")
    return total / count


def matched_random_heads(n_layers: int, n_heads: int, selected: Sequence[tuple[int, int]],
                         exclude: set[tuple[int, int]], seed: int) -> list[tuple[int, int]]:
    """One random head per selected head, from the same layer when possible (else the nearest
    layer with a free head), never in `exclude` or `selected`, without repeats."""
    rng = random.Random(seed)
    taken = set(exclude) | set(selected)
    free = {layer: [h for h in range(n_heads) if (layer, h) not in taken] for layer in range(n_layers)}
    out: list[tuple[int, int]] = []
    for layer, _ in selected:
        for dist in range(n_layers):
            options = [lay for lay in (layer - dist, layer + dist) if 0 <= lay < n_layers and free[lay]]
            if options:
                lay = options[0]
                head = rng.choice(free[lay])
                free[lay].remove(head)
                out.append((lay, head))
                break
        else:
            raise InterpError(f"not enough non-retrieval heads to match {len(selected)} masked heads")
    return out
