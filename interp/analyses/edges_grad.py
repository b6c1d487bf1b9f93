"""Gradient edge scores: EAP and EAP-IG (inputs / activations).

One forward of the model (resumed block by block, `receiver_grads`) in which the MLP's input is
a copy of the post-attention residual that only the MLP reads and the logits' input a copy of
the final residual, and each head's query / key / value (under grouped-query attention each
query head's own view of its KV group's keys / values, scored and read through the model's
checked attention arithmetic) is a tensor of the graph: one backward of the summed metric, then
one batched vector-Jacobian product per layer and input kind through the model's own norm,
projection and rotary gives dm/d(input_r) for every receiver r. score(s -> r) = sum over prompts
and positions of (a_s,corrupt - a_s,clean) . g_r, divided by the number of prompts; g_r the
gradient on the clean run (EAP) or its average over the EAP-IG points (see
`interp.analyses.edges` for the points).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.analyses.edges_graph import Layout
from interp.analyses.edges_run import PairRuns, _keep, qkv_sites
from interp.analyses.patching import pair_readout
from interp.analyses.sweep import Hooks, resume
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import UnsupportedError
from interp.core.hooks import HookFn
from interp.core.metrics import Metric
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch

Grads = list[Tensor]  # per receiver group: heads of layer L (3H, ...), MLP L (1, ...), ..., logits (1, ...)


def receiver_grads(model: HookedModel, pb: PairBatch, runs: PairRuns, lay: Layout, metric: Metric,
                        x0: Tensor, copies: int, extra: Callable[[int], Hooks] | None = None) -> Grads:
    """Gradients of the metric (summed over prompts and copies) w.r.t. each receiver's input,
    summed over the `copies` stacked variants: per layer [(3H, n, pos, d), (1, n, pos, d)], then
    the logits (1, n, pos, d). One forward of the model (resumed block by block from `x0`) and
    one backward; a head's q / k / v input is the block input itself, so each head's own gradient
    is pulled back from its query / key / value (under grouped-query attention its query head's
    view of the KV group) through the model's norm, projection and rotary: one batched
    vector-Jacobian product per layer and input kind on the forward's own graph."""
    rd = pair_readout(model, pb, metric)
    n = len(pb)
    with torch.enable_grad():
        x0 = x0.detach().requires_grad_(True)
        fwd = _GradForward(model, runs.inputs, lay, copies)
        final = fwd.run(x0, extra)
        m = rd.score(model.unembed(final[:, -1], rd.columns), copies)  # type: ignore[attr-defined]
        wanted = [t for rec in fwd.recs for t in rec.outputs()] + [t for rec in fwd.recs for t in rec.mlp_in] + [final]
        got = dict(zip(map(id, wanted), torch.autograd.grad(m.sum(), wanted, retain_graph=True, allow_unused=True),
                       strict=True))
        out: Grads = []
        for rec in fwd.recs:
            heads = rec.pull_back({i: g for i, g in got.items()}, lay.n_heads)
            out += [heads, _zero_none(got[id(rec.mlp_in[0])], rec.mlp_in[0])[None]]
        out.append(_zero_none(got[id(final)], final)[None])
    return [g.detach().reshape(g.shape[0], copies, n, *g.shape[2:]).sum(1) for g in out]


def _zero_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


class _LayerRec:
    """One block's tensors in the gradient forward: its input x, the model's q / k / v at the
    recording sites, the per-query-head key / value views (grouped-query), the MLP input."""

    def __init__(self, x: Tensor, group: int) -> None:
        self.x, self.group = x, group
        self.now: dict[str, Tensor] = {}
        self.views: dict[str, list[Tensor]] = {}
        self.mlp_in: list[Tensor] = []

    def outputs(self) -> list[Tensor]:
        return [self.now["q"], *self.views.get("k", [self.now["k"]]), *self.views.get("v", [self.now["v"]])]

    def pull_back(self, got: dict[int, Tensor | None], H: int) -> Tensor:
        """(3H, rows, pos, d): dm/d(input) of each head's q, k, v, receiver order."""
        per_kind = []
        for kind in ("q", "k", "v"):
            site = self.now[kind]
            cots = torch.zeros(H, *site.shape, dtype=site.dtype, device=site.device)
            for h in range(H):
                if kind in self.views:
                    g = got[id(self.views[kind][h])]
                    if g is not None:
                        cots[h, :, :, h // self.group] = g
                else:
                    g = got[id(site)]
                    if g is not None:
                        cots[h, :, :, h] = g[:, :, h]
            (gx,) = torch.autograd.grad(site, self.x, cots, retain_graph=True, is_grads_batched=True,
                                        allow_unused=True)
            per_kind.append(_zero_none(gx, cots[:, :, :, 0, 0, None].expand(H, *self.x.shape)))
        return torch.stack(per_kind, 1).reshape(3 * H, *self.x.shape)


class _GradForward:
    def __init__(self, model: HookedModel, inputs: BlockInputs, lay: Layout, copies: int) -> None:
        self.model, self.inputs, self.lay, self.copies = model, inputs, lay, copies
        self.group = model.spec.n_heads // model.spec.n_kv_heads
        self.recs: list[_LayerRec] = []

    def run(self, x0: Tensor, extra: Callable[[int], Hooks] | None) -> Tensor:
        x = x0
        for layer in range(self.lay.n_layers):
            rec = _LayerRec(x, self.group)
            self.recs.append(rec)
            hooks = [(site, _through(rec.now, kind)) for kind, site in qkv_sites(self.model, layer).items()]
            if self.group > 1:
                hooks += _view_hooks(self.model, layer, rec, self.lay.n_heads)
            hooks += list(extra(layer) if extra else [])

            def mlp_in(t: Tensor, _s: Site, rec: _LayerRec = rec) -> Tensor:
                rec.now["mid"] = t
                rec.mlp_in.append(t.clone())
                return rec.mlp_in[0]

            hooks += [(Site("resid_mid", layer=layer), mlp_in), (Site("mlp_out", layer=layer), _keep(rec.now, "mlp"))]
            resume(self.model, self.inputs, layer, self.copies, hooks, x=x, end_layer=layer + 1)
            x = rec.now["mid"] + rec.now["mlp"]
        return x.clone()


def _through(store: dict[str, Tensor], name: str) -> HookFn:
    """Keep the hook's tensor and hand it back as the replacement, so the kept tensor is the one
    the forward goes on with (a backend may give hooks a re-laid-out copy)."""

    def fn(t: Tensor, _s: Site) -> Tensor:
        store[name] = t
        return t

    return fn


def _view_hooks(model: HookedModel, layer: int, rec: _LayerRec, H: int) -> Hooks:
    """Grouped-query attention: every query head scores against (and reads) its own view of its
    KV group's keys (values), so each view's gradient is that head's alone; the scores and outputs
    are the model's own values (checked)."""
    group = rec.group
    scale, cap = model.attention_scale(layer), model.attention_softcap(layer)  # type: ignore[attr-defined]
    what = f"{model.spec.architecture} layer {layer}"

    def scores(t: Tensor, _s: Site) -> Tensor:
        q, k = rec.now["q"], rec.now["k"]
        check_recompute(q[:, :, 0].detach(), k[:, :, 0].detach(), t[:, 0].detach(), scale=scale, softcap=cap,
                        what=what)
        rec.views["k"] = [k[:, :, h // group] for h in range(H)]
        return torch.stack([recompute_scores(q[:, :, h], rec.views["k"][h], t[:, h], scale=scale, softcap=cap)
                            for h in range(H)], 1)

    def z(t: Tensor, _s: Site) -> Tensor:
        pattern, v = rec.now["pattern"], rec.now["v"]
        rec.views["v"] = [v[:, :, h // group] for h in range(H)]
        new = torch.stack([torch.einsum("bqk,bkd->bqd", pattern[:, h], rec.views["v"][h].to(pattern.dtype))
                           for h in range(H)], 2).to(t.dtype)
        err = float((new.detach() - t.detach()).abs().max())
        if err > 1e-4 * max(1.0, float(t.detach().abs().max())):
            raise UnsupportedError(f"{what}: a head's output is not its pattern times its values (max deviation "
                                   f"{err:.2e}); value receivers cannot be separated per query head")
        return new

    return [(Site("pattern", layer=layer), _through(rec.now, "pattern")),
            (Site("attn_scores", layer=layer), scores), (Site("z", layer=layer), z)]


def contract(grads: Grads, diff: Float[Tensor, "sender batch pos d_model"], lay: Layout) -> Float[Tensor, " edge"]:
    """Edge scores (graph order) summed over prompts: diff_s . g_r for each receiver's senders
    (one matrix product per receiver group, over its upstream senders only)."""
    flat = diff.reshape(diff.shape[0], -1).float()
    out = []
    r = 0
    for g in grads:
        k = g.shape[0]
        up = lay.n_upstream(r + k - 1)  # the group's last receiver has the most senders
        rows = g.reshape(k, -1).float() @ flat[:up].T  # (receivers, senders)
        out += [rows[i, : lay.n_upstream(r + i)] for i in range(k)]
        r += k
    return torch.cat(out).cpu()


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
