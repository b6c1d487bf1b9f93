"""One batched sweep engine for every patching analysis (activation patching, path patching,
memory/context heads, MCQ letter heads).

A sweep measures a metric after each of many *patch variants* of one base run. Every variant
is keyed by the block its patch first touches and the first position it changes; the engine

- groups the variants by (layer, start position) and, per group, resumes the base run there
  (`model.forward_from` on the residual captured by `model.capture_block_inputs`, and when the
  backend can, at the start position with the prefix's keys/values reused),
- stacks up to `batch_size` variants along the batch axis (variant j = rows j*n..(j+1)*n),
- unembeds only the last position and only the columns the metric reads (`Readout`),
- and reports progress after each chunk.

What a variant *is* stays with the caller: `run_chunk(layer, start, chunk)` builds the chunk's
hooks (and, for path patching, a second pass) and returns the final residual; `resume` is the
plain resumed forward most callers need. The batch loop (`over_batches`) runs a per-batch sweep
over prompts of different lengths and `prompt_mean` averages it the way every analysis reports.
`over_shards` is its sharded twin: each batch's sweep split by groups of whole layers (plus one
baseline shard per batch) and run by an `interp.core.execution.Executor`; since a shard holds
every variant of its layers, `sweep()` inside it forms exactly the chunks of the unsharded run.

    out = sweep(model, n, keys, run_chunk, rd, batch_size=64, progress=progress)  # (variant, n)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from interp.core.errors import DatasetError, InterpError
from interp.core.execution import Executor, Shard, run_shards
from interp.core.hooks import HookFn
from interp.core.metrics import Readout
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch

ProgressFn = Callable[[int, int], None]
Hooks = list[tuple[Site, HookFn]]
Key = tuple[int, int]  # (layer, start position) where a variant's forward resumes
RunChunk = Callable[[int, int, list[int]], Float[Tensor, "batch pos d_model"]]
BatchSize = int | Literal["auto"]  # variants per forward; "auto": from the free memory
log = logging.getLogger(__name__)


def check_batch_size(batch_size: BatchSize, *, name: str = "batch_size", auto: bool = True) -> None:
    if auto and batch_size == "auto":
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        allowed = "an integer >= 1" + (" or 'auto'" if auto else "")
        raise InterpError(f"{name} must be {allowed}, got {batch_size!r}")


def resume(model: HookedModel, inputs: BlockInputs, layer: int, copies: int, hooks: Hooks, *,
           start: int = 0, x: Float[Tensor, "batch pos d_model"] | None = None,
           end_layer: int | None = None) -> Float[Tensor, "batch pos d_model"]:
    """The base run resumed at block `layer` (and position `start`) with `copies` stacked copies
    of its residual (or `x`), under `hooks`: the final residual, or the one entering `end_layer`."""
    if x is None:
        x = inputs.resid_pre[layer][:, start:].repeat(copies, 1, 1)
    with model.hooks(hooks):
        return model.forward_from(layer, x, inputs, start_pos=start, end_layer=end_layer)


def sweep(
    model: HookedModel,
    n: int,
    keys: Sequence[Key | None],
    run_chunk: RunChunk,
    rd: Readout,
    *,
    batch_size: BatchSize = 64,
    progress: ProgressFn | None = None,
) -> Float[Tensor, "variant prompt"]:
    """The metric per (variant, prompt): variants with the same key run together, up to
    `batch_size` per forward. A variant keyed None has no effect to measure and stays NaN.

    `batch_size="auto"`: the first chunk runs one variant, the rest as many as the free memory
    holds (`interp.models.memory.auto_batch_size`). A chunk that runs out of memory is halved
    and retried (logged once per sweep), so the values are those of smaller batches."""
    check_batch_size(batch_size)
    out = torch.full((len(keys), n), float("nan"))
    groups: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    done = len(keys) - sum(len(g) for g in groups.values())  # skipped variants are done (NaN)
    size = _Size(batch_size, n)
    if progress:  # the bar shows 0/total from the start, not after the first chunk
        progress(done, len(keys))
    for layer, start in sorted(groups):
        idxs = groups[(layer, start)]
        first = 0
        while first < len(idxs):
            chunk = idxs[first : first + size.now]
            try:
                final = run_chunk(layer, start, chunk)
                logits = model.unembed(final[:, -1], rd.columns)
                out[chunk] = rd.score(logits, len(chunk)).view(len(chunk), n).float().cpu()
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                size.halve(e, len(chunk))  # re-raises what is not an out-of-memory error
                continue
            size.settle(model, final)
            first += len(chunk)
            done += len(chunk)
            if progress:
                progress(done, len(keys))
    return out


class _Size:
    """The sweep's variants per forward: fixed, or `auto` (1 until the first chunk shows the
    positions, then from the free memory); halved on an out-of-memory error."""

    def __init__(self, batch_size: BatchSize, rows: int):
        self.auto, self.rows = batch_size == "auto", rows
        self.now = 1 if batch_size == "auto" else int(batch_size)
        self.halved = False

    def settle(self, model: HookedModel, final: Tensor) -> None:
        if self.auto:
            from interp.models.memory import auto_batch_size

            self.now, self.auto = auto_batch_size(model, self.rows, int(final.shape[-2])), False
            log.info("batch_size auto: %d variants per forward", self.now)

    def halve(self, error: BaseException, tried: int) -> None:
        if not _out_of_memory(error) or tried <= 1:
            raise error
        self.now, self.auto = max(1, tried // 2), False
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not self.halved:
            log.warning("out of memory with %d variants per forward; retrying with %d (and halving again "
                        "if needed)", tried, self.now)
        self.halved = True


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


# ---------------------------------------------------------------------------- hooks


def write_rows(t: Tensor, j: int, n: int, site: Site, source: Tensor) -> None:
    """In place: rows j*n..(j+1)*n of `t` (variant j) get `source`'s values at `site`'s slice."""
    view = t[j * n : (j + 1) * n]
    idx = site.index(view.ndim)
    view[idx] = source[idx].to(view.dtype)


def variant_patch_hook(entries: list[tuple[int, Site]], n: int, source: Tensor) -> HookFn:
    """A hook writing, for each (variant j, site), `source` at the site's slice into variant j."""

    def fn(t: Tensor, _: Site) -> Tensor:
        t = t.clone()
        for j, s in entries:
            write_rows(t, j, n, s, source)
        return t

    return fn


def freeze_hook(value: Tensor, copies: int) -> HookFn:
    """A hook replacing the activation by `value` (one batch) for each of `copies` variants."""
    frozen = value.repeat(copies, *([1] * (value.ndim - 1)))

    def fn(t: Tensor, _: Site) -> Tensor:
        return frozen.to(t.dtype)

    return fn


def head_sender_hook(layer: int, heads: list[int], n: int, source: Tensor) -> tuple[Site, HookFn]:
    """Variant j's head `heads[j]` output `z` at `layer` taken from `source` (another run)."""
    entries = [(j, Site("z", layer=layer, head=h)) for j, h in enumerate(heads)]
    return Site("z", layer=layer), variant_patch_hook(entries, n, source)


# ---------------------------------------------------------------------------- batches


@dataclass
class BatchSweep:
    """One equal-length batch's sweep: metric per (variant, prompt), clean and corrupt metrics."""

    pb: PairBatch
    values: Float[Tensor, "variant prompt"]
    clean: Float[Tensor, " prompt"]
    corrupt: Float[Tensor, " prompt"]


PerBatch = Callable[[PairBatch, ProgressFn], tuple[Tensor, Tensor, Tensor]]


def over_batches(batches: Sequence[PairBatch], per_batch: PerBatch, n_variants: int,
                 progress: ProgressFn | None = None) -> Iterator[BatchSweep]:
    """Run `per_batch(pb, progress)` on each batch, with progress counted over all batches."""
    for bi, pb in enumerate(batches):

        def prog(done: int, _total: int, bi: int = bi) -> None:
            if progress:
                progress(bi * n_variants + done, n_variants * len(batches))

        yield BatchSweep(pb, *per_batch(pb, prog))


def prompt_mean(results: Iterator[BatchSweep]) -> tuple[Float[Tensor, " variant"], float, float, int]:
    """Mean over every prompt of all batches: (metric per variant, clean, corrupt, n prompts)."""
    sums: Tensor | None = None
    clean_sum = corrupt_sum = 0.0
    n_total = 0
    for r in results:
        sums = r.values.sum(1) if sums is None else sums + r.values.sum(1)
        clean_sum += float(r.clean.sum())
        corrupt_sum += float(r.corrupt.sum())
        n_total += len(r.pb)
    if sums is None or n_total == 0:
        raise DatasetError("no prompts to sweep: the dataset is empty")
    return sums / n_total, clean_sum / n_total, corrupt_sum / n_total, n_total


# ---------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class BatchPlan:
    """One batch's shards: `baseline` returns its (clean, corrupt) metrics per prompt, each of
    `parts` the (variant, prompt) metric of the variants it lists (indices into `n_variants`);
    variants in no part have nothing to measure and stay NaN."""

    pb: PairBatch
    n_variants: int
    baseline: Shard
    parts: list[tuple[Shard, list[int]]]


def layer_groups(layers: Sequence[int | None], per_shard: int = 1) -> list[tuple[int, list[int]]]:
    """Variant indices grouped by whole layers: (first layer, indices) for each run of
    `per_shard` consecutive layers among those present (None: a variant with nothing to run)."""
    if per_shard < 1:
        raise InterpError(f"layers per shard must be >= 1, got {per_shard}")
    present = sorted({la for la in layers if la is not None})
    groups = []
    for first in range(0, len(present), per_shard):
        chosen = set(present[first : first + per_shard])
        groups.append((present[first], [i for i, la in enumerate(layers) if la in chosen]))
    return groups


def over_shards(executor: Executor, plans: Sequence[BatchPlan],
                progress: ProgressFn | None = None) -> Iterator[BatchSweep]:
    """Run every batch's shards on `executor` (progress: shards done of all batches) and yield
    each batch's sweep assembled in variant order, as `over_batches` does."""
    shards = [s for p in plans for s in (p.baseline, *(part for part, _ in p.parts))]
    results = iter(run_shards(executor, shards, progress))
    for p in plans:
        clean, corrupt = next(results)
        values = torch.full((p.n_variants, len(p.pb)), float("nan"))
        for _, idxs in p.parts:
            values[idxs] = next(results)
        yield BatchSweep(p.pb, values, clean, corrupt)
