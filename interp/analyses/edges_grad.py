"""Gradient edge scores: EAP and EAP-IG (inputs / activations), on `edges_run.run_mixed`.

Each receiver's input is its own tensor in `run_mixed` (a head's q, k and v inputs are the rows
of the model's own block run on stacked copies of the residual; the MLP's input is a copy of the
post-attention residual that only the MLP reads; the logits' input a copy of the final
residual), so one backward of the summed metric gives dm/d(input_r) for every receiver r at
once. score(s -> r) = sum over prompts and positions of (a_s,corrupt - a_s,clean) . g_r, divided
by the number of prompts; g_r the gradient on the clean run (EAP) or its average over the
EAP-IG points (see `interp.analyses.edges` for the points).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.analyses.edges_graph import Layout
from interp.analyses.edges_run import PairRuns, Taps, run_mixed
from interp.analyses.patching import pair_readout
from interp.analyses.sweep import Hooks
from interp.core.hooks import HookFn
from interp.core.metrics import Metric
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch

Grads = list[Tensor]  # per receiver group: heads of layer L (3H, ...), MLP L (1, ...), ..., logits (1, ...)


def receiver_grads(model: HookedModel, pb: PairBatch, runs: PairRuns, lay: Layout, metric: Metric,
                   x0: Tensor, copies: int, extra: Callable[[int], Hooks] | None = None) -> Grads:
    """Gradients of the metric (summed over prompts and copies) w.r.t. each receiver's input,
    summed over the `copies` stacked variants; per layer [(3H, n, pos, d), (1, n, pos, d)], then
    the logits (1, n, pos, d)."""
    rd = pair_readout(model, pb, metric)
    n = len(pb)
    taps = Taps()
    with torch.enable_grad():
        x0 = x0.detach().requires_grad_(True)
        final = run_mixed(model, runs.inputs, lay, copies, x0, taps=taps, extra=extra)
        m = rd.score(model.unembed(final[:, -1], rd.columns), copies)  # type: ignore[attr-defined]
        assert taps.final is not None
        tensors = [t for layer in range(lay.n_layers) for t in (taps.heads[layer], taps.mlp[layer])] + [taps.final]
        grads = torch.autograd.grad(m.sum(), tensors, allow_unused=True)
    out = []
    for t, g in zip(tensors, grads, strict=True):
        g = torch.zeros_like(t) if g is None else g
        out.append(g.detach().reshape(-1, copies, n, *t.shape[1:]).sum(1))
    return out


def contract(grads: Grads, diff: Float[Tensor, "sender batch pos d_model"], lay: Layout) -> Float[Tensor, " edge"]:
    """Edge scores (graph order) summed over prompts: diff_s . g_r for each receiver's senders."""
    flat = diff.reshape(diff.shape[0], -1).float()
    parts = []
    for g in grads:
        parts.append(g.reshape(g.shape[0], -1).float() @ flat.T)  # (receivers, senders)
    rows = torch.cat(parts)  # (n_receivers, n_senders) in receiver order
    return torch.cat([rows[r, : lay.n_upstream(r)] for r in range(lay.n_receivers)]).cpu()


def _chunks(total: int, size: int) -> list[range]:
    return [range(i, min(total, i + size)) for i in range(0, total, size)]


def eap_batch(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric) -> Float[Tensor, " edge"]:
    runs = PairRuns.of(model, pb)
    g = receiver_grads(model, pb, runs, lay, metric, runs.clean[0], 1)
    return contract(g, runs.corrupt - runs.clean, lay)


def ig_inputs_batch(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric, steps: int,
                    per_forward: int) -> Float[Tensor, " edge"]:
    """Points e_corrupt + (k / steps)(e_clean - e_corrupt), k = 0..steps-1, `per_forward` at a time."""
    runs = PairRuns.of(model, pb)
    clean0, corrupt0 = runs.clean[0], runs.corrupt[0]
    total: Grads | None = None
    for ks in _chunks(steps, per_forward):
        x0 = torch.cat([corrupt0 + (k / steps) * (clean0 - corrupt0) for k in ks])
        g = receiver_grads(model, pb, runs, lay, metric, x0, len(ks))
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    assert total is not None
    return contract([t / steps for t in total], runs.corrupt - runs.clean, lay)


def ig_activations_batch(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric, steps: int,
                         per_forward: int) -> Float[Tensor, " edge"]:
    """For each node group (input, attention of layer l, MLP of layer l) and k = 1..steps, that
    group's output a_corrupt + (k / steps)(a_clean - a_corrupt), the rest recomputed on the clean
    prompt; gradients averaged over all group x step runs (as the reference code does)."""
    runs = PairRuns.of(model, pb)
    diff = runs.corrupt - runs.clean
    H = lay.n_heads
    groups = [("input", 0)] + [(what, layer) for layer in range(lay.n_layers) for what in ("attn", "mlp")]
    variants = [(g, k) for g in groups for k in range(1, steps + 1)]
    n = len(pb)
    total: Grads | None = None
    for chunk in _chunks(len(variants), per_forward):
        vs = [variants[i] for i in chunk]
        # output = clean + (1 - k/steps)(corrupt - clean)
        x0 = torch.cat([runs.clean[0] + ((1 - k / steps) * diff[0] if g == ("input", 0) else 0) for g, k in vs])

        def extra(layer: int, vs: list = vs) -> Hooks:
            hooks: Hooks = []
            for what, site, d in (("attn", "attn_out", diff[1 + layer * (H + 1): 1 + layer * (H + 1) + H].sum(0)),
                                  ("mlp", "mlp_out", diff[1 + layer * (H + 1) + H])):
                rows = [(j, 1 - k / steps) for j, (g, k) in enumerate(vs) if g == (what, layer)]
                if rows:
                    hooks.append((Site(site, layer=layer), _shift_rows(rows, n, d)))
            return hooks

        g = receiver_grads(model, pb, runs, lay, metric, x0, len(vs), extra)
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    assert total is not None
    return contract([t / len(variants) for t in total], diff, lay)


def _shift_rows(rows: list[tuple[int, float]], n: int, d: Tensor) -> HookFn:
    def fn(t: Tensor, _s: Site) -> Tensor:
        t = t.clone()
        for j, w in rows:
            t[j * n:(j + 1) * n] = t[j * n:(j + 1) * n] + w * d.to(t.dtype)
        return t

    return fn
