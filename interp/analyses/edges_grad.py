"""Gradient edge scores: EAP and EAP-IG (inputs / activations).

One forward of the model on the clean tokens (`receiver_grads`; its input residual replaced by
the EAP-IG point, stopped at the final residual) in which the MLP's input is a copy of the
post-attention residual that only the MLP reads (the stream carries on uncopied, as the block
adds it), the logits' input a copy of the final residual, and each head's query / key / value
(under grouped-query attention each query head's own copy of its KV group's keys / values,
scored and read through the model's checked attention arithmetic) is a tensor of the graph. One
backward of the summed metric gives every receiver's gradient; a head's q / k / v input is the
block input itself, so its own gradient is pulled back: its slot of the projection output's
gradient (the maps after the projection act per head - checked once per model, layer and kind
against one vector-Jacobian product per head), times its slice of the projection weight
(checked against the model's own q / k / v on every call), then one batched vector-Jacobian
product through the model's own norm for the layer's 3H receivers. score(s -> r) = sum over
prompts and positions of (a_s,corrupt - a_s,clean) . g_r, divided by the number of prompts; g_r
the gradient on the clean run (EAP) or its average over the EAP-IG points (see
`interp.analyses.edges` for the points). EAP's clean senders come from its gradient forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from interp.analyses.edges_graph import KINDS, Layout
from interp.analyses.edges_run import (
    _sender_sites,
    forward_to_final,
    qkv_sites,
    sender_outputs,
    senders_from_cache,
)
from interp.analyses.patching import pair_readout
from interp.analyses.sweep import Hooks
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import UnsupportedError
from interp.core.hooks import HookFn, caching_hooks
from interp.core.metrics import Metric
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch

# (layer, kind) whose maps from the projection to the recording site were checked to act per head
_PER_HEAD: weakref.WeakKeyDictionary[HookedModel, set[tuple[int, str]]] = weakref.WeakKeyDictionary()

Grads = list[Tensor]  # per receiver group: heads of layer L (3H, ...), MLP L (1, ...), ..., logits (1, ...)


def receiver_grads(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric, x0: Tensor | None,
                   copies: int, extra: Callable[[int], Hooks] | None = None,
                   senders: dict[Site, Tensor] | None = None) -> Grads:
    """Gradients of the metric (summed over prompts and copies) w.r.t. each receiver's input,
    summed over the `copies` stacked variants: per layer [(3H, n, pos, d), (1, n, pos, d)], then
    the logits (1, n, pos, d). One forward of the model on the clean tokens (`copies` stacked;
    its input residual replaced by `x0` when given), stopped at the final residual, and one
    backward; the MLP's input is a copy of the post-attention residual that only the MLP reads,
    the logits' input a copy of the final residual. A head's q / k / v input is the block input
    itself, so each head's own gradient is pulled back (`_LayerRec.pull_back`). With `senders`,
    the sender sites of the forward are cached there (detached)."""
    rd = pair_readout(model, pb, metric)
    n = len(pb)
    verified = _PER_HEAD.setdefault(model, set())
    with torch.enable_grad():
        fwd = _GradForward(model, lay, x0)
        final = fwd.run(pb.clean.repeat(copies, 1), extra, senders)
        m = rd.score(model.unembed(final[:, -1], rd.columns), copies)  # type: ignore[attr-defined]
        wanted = [t for rec in fwd.recs for t in [*rec.outputs(), *rec.proj_outputs(), *rec.mlp_in]] + [final]
        got = dict(zip(map(id, wanted), torch.autograd.grad(m.sum(), wanted, retain_graph=True, allow_unused=True),
                       strict=True))
        out: Grads = []
        for rec in fwd.recs:
            heads = rec.pull_back(got, lay.n_heads, model.qkv_weights(rec.layer),  # type: ignore[attr-defined]
                                  f"{model.spec.architecture} layer {rec.layer}", verified)
            out += [heads, _zero_none(got[id(rec.mlp_in[0])], rec.mlp_in[0])[None]]
        out.append(_zero_none(got[id(final)], final)[None])
    return [g.detach().reshape(g.shape[0], copies, n, *g.shape[2:]).sum(1) if copies > 1 else g.detach()
            for g in out]


def _zero_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


class _LayerRec:
    """One block's tensors in the gradient forward: its input x, the attention's normed input
    (what the q / k / v projections read), the projections' outputs, the model's q / k / v at
    the recording sites, the per-query-head key / value views (grouped-query), the MLP input."""

    def __init__(self, x: Tensor, group: int, layer: int = 0) -> None:
        self.x, self.group, self.layer = x, group, layer
        self.now: dict[str, Tensor] = {}
        self.proj: dict[str, Tensor] = {}
        self.views: dict[str, Tensor] = {}  # kind -> (rows, pos, heads, d_head): each query head's copy
        self.mlp_in: list[Tensor] = []

    def outputs(self) -> list[Tensor]:
        return [self.now["q"], self.views.get("k", self.now["k"]), self.views.get("v", self.now["v"])]

    def proj_outputs(self) -> list[Tensor]:
        """The projection outputs whose gradient is each head's own (kinds without views)."""
        return [self.proj[kind] for kind in KINDS if kind not in self.views]

    def pull_back(self, got: dict[int, Tensor | None], H: int, weights: dict[str, tuple[Tensor, Tensor | None]],
                  what: str, verified: set[tuple[int, str]]) -> Tensor:
        """(3H, rows, pos, d): dm/d(input) of each head's q, k, v, receiver order. Per kind, each
        head's own gradient on the projection's output (`_own`), times its slice of the
        projection's weight, then through the model's norm to the block input in one batched
        vector-Jacobian product for all 3H."""
        u = self.now["u"]
        per_kind = []
        for kind in KINDS:
            W, b = weights[kind]
            _check_projection(u, self.proj[kind], W, b, f"{what} {kind}")
            slot = torch.arange(H, device=u.device) // (1 if kind == "q" else self.group)
            per_kind.append(self._own(kind, got, H, slot, W.to(u.dtype), verified))
        # receiver order: per head its q, k, v (one batched product when every kind is by slots)
        if all(isinstance(k, tuple) for k in per_kind):
            own, Ws = (torch.stack(parts, 1).flatten(0, 1) for parts in zip(*per_kind, strict=True))
            gu = torch.einsum("rbpe,rde->rbpd", own, Ws)
        else:
            gu = torch.stack([k if isinstance(k, Tensor) else torch.einsum("hbpe,hde->hbpd", *k)
                              for k in per_kind], 1).flatten(0, 1)
        (gx,) = torch.autograd.grad(u, self.x, gu, retain_graph=True, is_grads_batched=True, allow_unused=True)
        return _zero_none(gx, gu)

    def _own(self, kind: str, got: dict[int, Tensor | None], H: int, slot: Tensor, W: Tensor,
             verified: set[tuple[int, str]]) -> tuple[Tensor, Tensor] | Tensor:
        """Each head's own q / k / v gradient on the projection output and the weight slice
        that takes it to the attention's input ((H, rows, pos, d_head), (H, d, d_head)), or that
        product (H, rows, pos, d) taken through the whole weight. The maps between the
        projection and the recording site (reshape, q/k norm, rotary) act on each head alone in
        every family the graph accepts, so a head's own gradient on the projection output is its
        slot of the output's gradient (with grouped-query views, one batched product per member
        of a KV group). That is checked once per model, layer and kind against one
        vector-Jacobian product per head (`_per_head`), used instead where it does not hold."""
        fast = self._own_slots(kind, got, H)
        if (self.layer, kind) in verified:
            return fast, W[slot]
        gp = self._per_head(kind, got, H)
        own = gp[torch.arange(H, device=gp.device), :, :, slot]  # (H, rows, pos, d_head)
        mass = gp.abs().sum(dim=(1, 2, 4))  # (H, heads')
        mass[torch.arange(H, device=gp.device), slot] = 0
        if not bool((mass == 0).all()):
            return torch.einsum("hbpke,kde->hbpd", gp, W)
        if torch.allclose(fast, own, rtol=1e-5, atol=1e-7 * max(1.0, float(own.abs().max()))):
            verified.add((self.layer, kind))
        return own, W[slot]

    def _own_slots(self, kind: str, got: dict[int, Tensor | None], H: int) -> Tensor:
        """(H, rows, pos, d_head): each head's slot of the projection output's gradient."""
        p = self.proj[kind]
        if kind not in self.views:
            g = _zero_none(got[id(p)], p)  # (rows, pos, heads, d_head)
            return g.permute(2, 0, 1, 3)
        site = self.now[kind]
        kv, group = site.shape[2], self.group
        views = _zero_none(got[id(self.views[kind])], self.views[kind])  # (rows, pos, H, d_head)
        cots = views.unflatten(2, (kv, group)).permute(3, 0, 1, 2, 4)  # (group, rows, pos, kv, d_head)
        (gp,) = torch.autograd.grad(site, p, cots.to(site.dtype), retain_graph=True, is_grads_batched=True,
                                    allow_unused=True)
        gp = torch.zeros(group, *p.shape, dtype=p.dtype, device=p.device) if gp is None else gp
        return gp.permute(3, 0, 1, 2, 4).reshape(H, *gp.shape[1:3], gp.shape[4])

    def _per_head(self, kind: str, got: dict[int, Tensor | None], H: int) -> Tensor:
        """(H, *projection output shape): one vector-Jacobian product per head from its own
        gradient at the recording site (or its query head's view) back to the projection output."""
        site, p = self.now[kind], self.proj[kind]
        cots = torch.zeros(H, *site.shape, dtype=site.dtype, device=site.device)
        g = got[id(self.views.get(kind, site))]  # (rows, pos, H, d_head): head h's own at [:, :, h]
        if g is not None:
            group = self.group if kind in self.views else 1
            for h in range(H):
                cots[h, :, :, h // group] = g[:, :, h]
        (gp,) = torch.autograd.grad(site, p, cots, retain_graph=True, is_grads_batched=True, allow_unused=True)
        return torch.zeros(H, *p.shape, dtype=p.dtype, device=p.device) if gp is None else gp


def _check_projection(u: Tensor, p: Tensor, W: Tensor, b: Tensor | None, what: str) -> None:
    """The site the gradient is pulled back through must be attn_in @ W + b (checked on the
    first row): else the weights read are not the ones the model used."""
    with torch.no_grad():
        pred = torch.einsum("pd,hde->phe", u[0].to(W.dtype), W)
        if b is not None:
            pred = pred + b
        ref = p[0].to(pred.dtype)
        err = float((pred - ref).abs().max())
        if err > 1e-4 * max(1.0, float(ref.abs().max())):
            raise UnsupportedError(f"{what}: the projection's output is not its input times its per-head "
                                   f"weights (max deviation {err:.2e}); edge gradients cannot be separated per head")


class _GradForward:
    """The gradient forward's hooks: per block, record its input, the attention's normed input,
    the q / k / v projections' outputs and recording sites (grouped-query views), hand the MLP a
    copy of the post-attention residual and carry the stream on as that residual (uncopied) plus
    the MLP output, as the block itself adds them; stop at the final residual (copied)."""

    def __init__(self, model: HookedModel, lay: Layout, x0: Tensor | None) -> None:
        self.model, self.lay, self.x0 = model, lay, x0
        self.group = model.spec.n_heads // model.spec.n_kv_heads
        self.recs: list[_LayerRec] = []
        self.final: Tensor | None = None

    def run(self, tokens: Tensor, extra: Callable[[int], Hooks] | None, senders: dict[Site, Tensor] | None) -> Tensor:
        hooks: Hooks = []
        for layer in range(self.lay.n_layers):
            hooks += self._layer_hooks(layer, extra)

        def final(t: Tensor, _s: Site) -> None:
            self.final = t.clone()

        hooks.append((Site("resid_final"), final))
        if senders is not None:
            hooks += caching_hooks(_sender_sites(self.model), senders)
        forward_to_final(self.model, tokens, hooks)
        if self.final is None or len(self.recs) != self.lay.n_layers:
            raise UnsupportedError(f"edge attribution on {self.model.spec.architecture}: the gradient forward did "
                                   "not reach every block's sites")
        return self.final

    def _layer_hooks(self, layer: int, extra: Callable[[int], Hooks] | None) -> Hooks:
        def block_in(t: Tensor, _s: Site) -> Tensor:
            if layer == 0:
                t = (t if self.x0 is None else self.x0.to(t.dtype)).detach().requires_grad_(True)
            rec = _LayerRec(t, self.group, layer)
            self.recs.append(rec)
            return t

        def rec() -> _LayerRec:
            return self.recs[-1]

        def keep(store: str, name: str) -> HookFn:
            def fn(t: Tensor, _s: Site) -> Tensor:
                getattr(rec(), store)[name] = t
                return t

            return fn

        def mlp_in(t: Tensor, _s: Site) -> Tensor:
            rec().now["mid"] = t
            rec().mlp_in.append(t.clone())
            return rec().mlp_in[0]

        def block_out(_t: Tensor, _s: Site) -> Tensor:
            return rec().now["mid"] + rec().now["mlp"]

        hooks: Hooks = [(Site("resid_pre", layer=layer), block_in), (Site("attn_in", layer=layer), keep("now", "u"))]
        hooks += [(Site(kind, layer=layer), keep("proj", kind)) for kind in ("q", "k", "v")]
        hooks += [(site, keep("now", kind)) for kind, site in qkv_sites(self.model, layer).items()]
        if self.group > 1:
            hooks.append((Site("pattern", layer=layer), keep("now", "pattern")))
            hooks += _view_hooks(self.model, layer, rec, self.lay.n_heads)
        hooks += list(extra(layer) if extra else [])
        hooks += [(Site("resid_mid", layer=layer), mlp_in), (Site("mlp_out", layer=layer), keep("now", "mlp")),
                  (Site("resid_post", layer=layer), block_out)]
        return hooks


def _view_hooks(model: HookedModel, layer: int, rec_of: Callable[[], _LayerRec], H: int) -> Hooks:
    """Grouped-query attention: every query head scores against (and reads) its own view of its
    KV group's keys (values), so each view's gradient is that head's alone; the scores and outputs
    are the model's own values (checked). Needs the layer's pattern recorded in `now`."""
    group = H // model.spec.n_kv_heads
    scale, cap = model.attention_scale(layer), model.attention_softcap(layer)  # type: ignore[attr-defined]
    what = f"{model.spec.architecture} layer {layer}"

    def scores(t: Tensor, _s: Site) -> Tensor:
        rec = rec_of()
        q, k = rec.now["q"], rec.now["k"]
        check_recompute(q[:, :, 0].detach(), k[:, :, 0].detach(), t[:, 0].detach(), scale=scale, softcap=cap,
                        what=what)
        rec.views["k"] = k.repeat_interleave(group, dim=2)
        new = recompute_scores(_heads_first(q), _heads_first(rec.views["k"]), t.flatten(0, 1), scale=scale,
                               softcap=cap)
        return new.unflatten(0, t.shape[:2])

    def z(t: Tensor, _s: Site) -> Tensor:
        rec = rec_of()
        pattern, v = rec.now["pattern"], rec.now["v"]
        rec.views["v"] = v.repeat_interleave(group, dim=2)
        new = torch.einsum("bhqk,bkhd->bqhd", pattern, rec.views["v"].to(pattern.dtype)).to(t.dtype)
        err = float((new.detach() - t.detach()).abs().max())
        if err > 1e-4 * max(1.0, float(t.detach().abs().max())):
            raise UnsupportedError(f"{what}: a head's output is not its pattern times its values (max deviation "
                                   f"{err:.2e}); value receivers cannot be separated per query head")
        return new

    return [(Site("attn_scores", layer=layer), scores), (Site("z", layer=layer), z)]


def _heads_first(t: Tensor) -> Tensor:
    """(rows, pos, heads, d) -> (rows * heads, pos, d)."""
    return t.permute(0, 2, 1, 3).flatten(0, 1)


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
    """Two forwards (the corrupt one without gradients, the clean one with its backward, which
    also gives the clean senders' outputs) and the contraction."""
    corrupt, _ = sender_outputs(model, pb.corrupt)
    cache: dict[Site, Tensor] = {}
    g = receiver_grads(model, pb, lay, metric, None, 1, senders=cache)
    clean, _ = senders_from_cache(model, cache)
    return contract(g, corrupt - clean, lay)


def _both_senders(model: HookedModel, pb: PairBatch) -> tuple[Tensor, Tensor]:
    return sender_outputs(model, pb.clean)[0], sender_outputs(model, pb.corrupt)[0]


def ig_inputs_batch(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric, steps: int,
                    per_forward: int) -> Float[Tensor, " edge"]:
    """Points e_corrupt + (k / steps)(e_clean - e_corrupt), k = 0..steps-1, `per_forward` at a time."""
    clean, corrupt = _both_senders(model, pb)
    clean0, corrupt0 = clean[0], corrupt[0]
    total: Grads | None = None
    for ks in _chunks(steps, per_forward):
        x0 = torch.cat([corrupt0 + (k / steps) * (clean0 - corrupt0) for k in ks])
        g = receiver_grads(model, pb, lay, metric, x0, len(ks))
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    assert total is not None
    return contract([t / steps for t in total], corrupt - clean, lay)


def ig_activations_batch(model: HookedModel, pb: PairBatch, lay: Layout, metric: Metric, steps: int,
                         per_forward: int) -> Float[Tensor, " edge"]:
    """For each node group (input, attention of layer l, MLP of layer l) and k = 1..steps, that
    group's output a_corrupt + (k / steps)(a_clean - a_corrupt), the rest recomputed on the clean
    prompt; gradients averaged over all group x step runs (as the reference code does)."""
    clean, corrupt = _both_senders(model, pb)
    diff = corrupt - clean
    H = lay.n_heads
    groups = [("input", 0)] + [(what, layer) for layer in range(lay.n_layers) for what in ("attn", "mlp")]
    variants = [(g, k) for g in groups for k in range(1, steps + 1)]
    n = len(pb)
    total: Grads | None = None
    for chunk in _chunks(len(variants), per_forward):
        vs = [variants[i] for i in chunk]
        # output = clean + (1 - k/steps)(corrupt - clean)
        x0 = torch.cat([clean[0] + ((1 - k / steps) * diff[0] if g == ("input", 0) else 0) for g, k in vs])

        def extra(layer: int, vs: list = vs) -> Hooks:
            hooks: Hooks = []
            for what, site, d in (("attn", "attn_out", diff[1 + layer * (H + 1): 1 + layer * (H + 1) + H].sum(0)),
                                  ("mlp", "mlp_out", diff[1 + layer * (H + 1) + H])):
                rows = [(j, 1 - k / steps) for j, (g, k) in enumerate(vs) if g == (what, layer)]
                if rows:
                    hooks.append((Site(site, layer=layer), _shift_rows(rows, n, d)))
            return hooks

        g = receiver_grads(model, pb, lay, metric, x0, len(vs), extra)
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
