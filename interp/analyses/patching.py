"""Activation patching (Meng et al. 2022; Wang et al. 2022), with fast batched sweeps.

Denoising runs the corrupt prompt and writes one clean activation into it; noising runs the
clean prompt and writes one corrupt activation. The metric (default: logit difference at the
last position) is reported raw and normalised, (m - m_corrupt) / (m_clean - m_corrupt), so 1
means clean behaviour and 0 corrupt behaviour in both directions.

Speed. A sweep never runs one full forward per site. For each layer L it
- starts from the base run's residual entering block L (the unpatched prefix is shared),
- stacks up to `batch_size` patch variants (e.g. all heads of L) along the batch axis,
- and unembeds only the last position and only the columns the metric needs.
The result equals the one-forward-per-site loop up to float rounding (tests check 1e-4 against
an independent raw-PyTorch loop on the Hugging Face model).

    pairs = tokenize_pairs(generate_ioi(20, model.tokenizer), model.tokenizer)
    heads = patch_heads(model, pairs)            # PatchingResult, axes ("layer", "head")
    resid = patch_residual(model, pairs)         # axes ("component", "layer", "position")

Prompts of different token lengths are swept batch by batch and averaged (weighted by prompt
count); maps resolved by position use the largest batch of equal-length, same-template prompts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from interp.analyses.results import PatchingResult
from interp.analyses.sweep import (
    BatchPlan,
    ProgressFn,
    check_batch_size,
    layer_groups,
    over_batches,
    over_shards,
    prompt_mean,
    resume,
    sweep,
    variant_patch_hook,
    write_rows,
)
from interp.core.errors import DatasetError, InterpError
from interp.core.execution import Executor, Shard
from interp.core.metrics import Metric, Readout, Targets, as_metric, get_metric, readout
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Component, Site
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch, TokenizedPairs

DIRECTIONS = ("denoising", "noising")
RESIDUAL_COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")

__all__ = ["DIRECTIONS", "RESIDUAL_COMPONENTS", "ProgressFn", "baseline_metrics", "patch_heads",
           "patch_residual", "pair_readout", "sweep_sites"]


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise InterpError(f"unknown patching direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")


def _base_and_source(pb: PairBatch, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)


def pair_readout(model: HookedModel, pb: PairBatch, metric: Metric) -> Readout:
    """The metric's readout for a pair batch's answer and distractor ids, on the model's device."""
    return readout(metric, Targets(pb.answer_ids, pb.distractor_ids).to(model.device))


@torch.no_grad()
def baseline_metrics(model: HookedModel, pb: PairBatch,
                     metric: Metric) -> tuple[Float[Tensor, " prompt"], Float[Tensor, " prompt"]]:
    """Per-prompt metric on the clean and the corrupt prompts (no patching)."""
    rd = pair_readout(model, pb, metric)
    return tuple(rd.score_vocab(model.forward(t.to(model.device))[:, -1]) for t in (pb.clean, pb.corrupt))  # type: ignore[return-value]


def _check_sites(sites: Sequence[Site]) -> None:
    for s in sites:
        if s.layer is None:
            raise InterpError(f"site {s} has no layer; sweeps patch per-layer components")


def _site_key(site: Site, inputs: BlockInputs, T: int) -> tuple[int, int]:
    """(layer, first patched position): a patch at position p leaves positions < p untouched, so
    the forward resumes at block L *and* position p, reusing the base run's keys/values for the
    prefix (when the backend can)."""
    start = site.position if (site.position is not None and inputs.resumes_at_position) else 0
    return site.layer, start + T if start < 0 else start  # type: ignore[return-value]


@torch.no_grad()
def sweep_sites(
    model: HookedModel,
    pb: PairBatch,
    sites: Sequence[Site],
    *,
    direction: str = "denoising",
    metric: str | Metric = "logit_diff",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    prepared: Prepared | None = None,
) -> Float[Tensor, "site prompt"]:
    """Per-prompt metric after patching each site in turn: (site, prompt).

    A site with a head or position patches only that slice; a site without patches the
    whole tensor of its component at its layer. `prepared`: the source cache and base-run
    block inputs from `prepare_sweep` (holding at least these sites), to reuse across calls."""
    _check_direction(direction)
    metric = as_metric(metric)
    check_batch_size(batch_size)
    _check_sites(sites)
    dev = model.device
    base_tokens, src_tokens = (t.to(dev) for t in _base_and_source(pb, direction))
    n, T = base_tokens.shape

    src, inputs = prepared if prepared is not None else _prepare(model, base_tokens, src_tokens, sites)

    def run_chunk(layer: int, start: int, chunk: list[int]) -> Tensor:
        x = inputs.resid_pre[layer][:, start:].repeat(len(chunk), 1, 1)
        patches: dict[Site, list[tuple[int, Site]]] = {}
        for j, i in enumerate(chunk):
            s = _shift(sites[i], start)
            if s.component == Component.RESID_PRE:
                write_rows(x, j, n, s, _narrow(src[s.hook_site], s, start))
            else:
                patches.setdefault(s.hook_site, []).append((j, s))
        hooks = [(hs, variant_patch_hook(e, n, _narrow(src[hs], hs, start))) for hs, e in patches.items()]
        return resume(model, inputs, layer, len(chunk), hooks, start=start, x=x)

    keys = [_site_key(s, inputs, T) for s in sites]
    return sweep(model, n, keys, run_chunk, pair_readout(model, pb, metric), batch_size=batch_size,
                 progress=progress)


Prepared = tuple[dict[Site, torch.Tensor], BlockInputs]


def _prepare(model: HookedModel, base_tokens: Tensor, src_tokens: Tensor, sites: Sequence[Site]) -> Prepared:
    """The source run's activations at the sites' hook sites and the base run's block inputs."""
    hook_sites = sorted({s.hook_site for s in sites if s.component != Component.RESID_PRE}, key=str)
    resid_sites = sorted({s.hook_site for s in sites if s.component == Component.RESID_PRE}, key=str)
    _, src = model.run_with_cache(src_tokens, [*hook_sites, *resid_sites])
    return src, model.capture_block_inputs(base_tokens)


# The last batch prepared by a shard in this process (a worker runs a batch's layers in turn):
# (model id, direction, batch tokens digest, hook sites) -> Prepared. One entry: no more memory
# than an unsharded sweep holds.
_LAST_PREPARED: dict[tuple, Prepared] = {}


def _prepared_for(model: HookedModel, pb: PairBatch, direction: str, batch_sites: Sequence[Site]) -> Prepared:
    digest = hashlib.sha256(pb.clean.numpy().tobytes() + b"|" + pb.corrupt.numpy().tobytes()).hexdigest()
    key = (id(model), direction, digest, tuple(sorted({str(s.hook_site) for s in batch_sites})))
    if key not in _LAST_PREPARED:
        _LAST_PREPARED.clear()
        dev = model.device
        base_tokens, src_tokens = (t.to(dev) for t in _base_and_source(pb, direction))
        _LAST_PREPARED[key] = _prepare(model, base_tokens, src_tokens, batch_sites)
    return _LAST_PREPARED[key]


def _shift(site: Site, start: int) -> Site:
    if not start or site.position is None:
        return site
    pos = site.position if site.position >= 0 else None
    return replace(site, position=pos - start if pos is not None else site.position)


def _narrow(source: torch.Tensor, site: Site, start: int) -> torch.Tensor:
    """The source activation from position `start` on (the part a resumed forward sees)."""
    if not start:
        return source
    axis = site.pos_axis
    return source.narrow(axis, start, source.shape[axis] - start)  # type: ignore[arg-type]


def check_pairs(pairs: TokenizedPairs, what: str) -> None:
    if not pairs.batches:
        raise DatasetError(f"{what} needs at least one prompt pair; the dataset is empty")


BatchSize = int | Callable[[PairBatch], int]


def _combine(
    model: HookedModel,
    batches: Sequence[PairBatch],
    make_sites: Callable[[PairBatch], list[Site]],
    *,
    direction: str,
    metric: Metric,
    batch_size: BatchSize,
    progress: ProgressFn | None,
    executor: Executor | None = None,
    name: str = "",
) -> tuple[torch.Tensor, float, float, int]:
    """Sweep every batch and average over all prompts: (site,), clean, corrupt, n. With an
    `executor`, each batch is split into shards keyed `<name>-b<batch>-L<layer>` (one per layer)
    and `<name>-b<batch>-baseline`."""
    if executor is not None:
        try:
            return prompt_mean(over_shards(executor, _plans(name, batches, make_sites, direction, metric, batch_size),
                                           progress))
        finally:
            _LAST_PREPARED.clear()  # the in-process shards' cache ends with the sweep

    def per_batch(pb: PairBatch, prog: ProgressFn):
        bs = batch_size(pb) if callable(batch_size) else batch_size
        vals = sweep_sites(model, pb, make_sites(pb), direction=direction, metric=metric, batch_size=bs, progress=prog)
        return (vals, *baseline_metrics(model, pb, metric))

    n_sites = len(make_sites(batches[0])) if batches else 0
    return prompt_mean(over_batches(batches, per_batch, n_sites, progress))


def sweep_shard(model: HookedModel, payload: tuple) -> Float[Tensor, "site prompt"]:
    """A shard's task: `sweep_sites` on (pair batch, sites, direction, metric, batch size) with
    the batch's source cache and base-run inputs (for `batch_sites`, all the batch's sites)
    computed once per batch in this process, not once per shard."""
    pb, sites, direction, metric, batch_size, batch_sites = payload
    _check_direction(direction)
    prepared = _prepared_for(model, pb, direction, batch_sites)
    return sweep_sites(model, pb, sites, direction=direction, metric=metric, batch_size=batch_size,
                       prepared=prepared)


def baseline_shard(model: HookedModel, payload: tuple) -> tuple[Float[Tensor, " prompt"], Float[Tensor, " prompt"]]:
    """A shard's task: `baseline_metrics` on (pair batch, metric)."""
    pb, metric = payload
    return baseline_metrics(model, pb, metric)


def _plans(name: str, batches: Sequence[PairBatch], make_sites: Callable[[PairBatch], list[Site]],
           direction: str, metric: Metric, batch_size: BatchSize) -> list[BatchPlan]:
    plans = []
    for bi, pb in enumerate(batches):
        sites = make_sites(pb)
        _check_sites(sites)
        bs = batch_size(pb) if callable(batch_size) else batch_size
        hook_sites = sorted({s.hook_site for s in sites}, key=str)  # what the batch's shards need from the source
        parts = [(Shard(f"{name}-b{bi}-L{layer}", sweep_shard,
                        (pb, [sites[i] for i in idxs], direction, metric, bs, hook_sites)), idxs)
                 for layer, idxs in layer_groups([s.layer for s in sites])]
        plans.append(BatchPlan(pb, len(sites), Shard(f"{name}-b{bi}-baseline", baseline_shard, (pb, metric)), parts))
    return plans


def _position_labels(model: HookedModel, pb: PairBatch) -> list[str]:
    return model.str_tokens(pb.clean[0])


def _one_prompt_safe(batch_size: int) -> Callable[[PairBatch], int]:
    def bs(pb: PairBatch) -> int:
        # A one-prompt batch is swept one site per forward: the backend's resume-at-position
        # does not stack copies of a one-prompt key/value prefix (tlens `_repeat_batch`).
        return batch_size if len(pb) > 1 else 1

    return bs


def patch_heads(
    model: HookedModel,
    pairs: TokenizedPairs,
    *,
    direction: str = "denoising",
    metric: str = "logit_diff",
    per_position: bool = False,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    position: int | None = None,
    executor: Executor | None = None,
) -> PatchingResult:
    """Patch each head's output `z` (all positions, each position when `per_position`, or only
    `position`, e.g. -1 for the last, where the sweep resumes the forward there). With an
    `executor` the sweep runs as shards (prompt batch x layer) there; same numbers."""
    _check_direction(direction)
    check_pairs(pairs, "head patching")
    m = get_metric(metric)
    L, H = model.spec.n_layers, model.spec.n_heads
    if not per_position:
        def sites(_pb: PairBatch) -> list[Site]:
            return [Site("z", layer=layer, head=h, position=position) for layer in range(L) for h in range(H)]

        bs = batch_size if position is None else _one_prompt_safe(batch_size)
        name = "head_patching" if position is None else \
            "head_patching_last_position" if position == -1 else f"head_patching_position_{position}"
        vals, clean, corrupt, n = _combine(model, pairs.by_length().batches, sites, direction=direction, metric=m,
                                           batch_size=bs, progress=progress, executor=executor, name=name)
        return PatchingResult(name, direction, metric, ("layer", "head"), vals.view(L, H), clean, corrupt, n)
    pb = pairs.largest_batch()
    T = pb.clean.shape[1]

    def sites_pos(_pb: PairBatch) -> list[Site]:
        return [Site("z", layer=layer, head=h, position=p) for layer in range(L) for h in range(H) for p in range(T)]

    vals, clean, corrupt, n = _combine(model, [pb], sites_pos, direction=direction, metric=m, batch_size=batch_size,
                                       progress=progress, executor=executor, name="head_patching_per_position")
    return PatchingResult("head_patching_per_position", direction, metric, ("layer", "head", "position"),
                          vals.view(L, H, T), clean, corrupt, n, token_labels=_position_labels(model, pb))


def patch_residual(
    model: HookedModel,
    pairs: TokenizedPairs,
    *,
    components: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    direction: str = "denoising",
    metric: str = "logit_diff",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
) -> PatchingResult:
    """Patch the residual stream / attention output / MLP output per (layer, position).

    Uses the largest batch of equal-length prompts, so positions mean the same token slot. With
    an `executor` the sweep runs as shards (one per layer) there; same numbers."""
    _check_direction(direction)
    check_pairs(pairs, "residual patching")
    bad = [c for c in components if c not in RESIDUAL_COMPONENTS]
    if bad or not components:
        raise InterpError(f"unknown residual components {bad}; allowed: {', '.join(RESIDUAL_COMPONENTS)}")
    m = get_metric(metric)
    L = model.spec.n_layers
    pb = pairs.largest_batch()
    T = pb.clean.shape[1]

    def sites(_pb: PairBatch) -> list[Site]:
        return [Site(c, layer=layer, position=p) for c in components for layer in range(L) for p in range(T)]

    vals, clean, corrupt, n = _combine(model, [pb], sites, direction=direction, metric=m, batch_size=batch_size,
                                       progress=progress, executor=executor, name="residual_patching")
    return PatchingResult("residual_patching", direction, metric, ("component", "layer", "position"),
                          vals.view(len(components), L, T), clean, corrupt, n,
                          labels={"component": list(components)}, token_labels=_position_labels(model, pb))
