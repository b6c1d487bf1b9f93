"""The one implementation of "the input of receiver r with some senders' contributions swapped".

A receiver's input is the residual stream entering it, the sum of its upstream senders'
outputs (+ constant biases, `sender_outputs` checks that they add up on every run). Swapping
sender s in receiver r means input_r + (a_s,src - a_s,current) for that receiver only:

- the logits: the final residual plus the difference, then the model's own output head;
- an MLP: the model's own block run with its post-attention residual (``resid_mid``, what the
  MLP's norm reads) replaced for the MLP only; the residual stream carries on with the unswapped
  value plus the new MLP output;
- a head's q, k or v: the model's own block is run on the swapped residual (pass 1, stopped once
  the attention's inputs are computed) and only that head's query (or key or value) is taken
  from it into the real forward (pass 2) - after the model's q/k norms and rotary where the
  backend exposes those sites. Under grouped-query attention a key / value receiver is one query
  head's view of its KV group: its scores are recomputed from the current queries and the
  swapped keys, its output from the current pattern and the swapped values (as path patching),
  checked first against the model's own scores / outputs.

`exact_sweep` patches one edge per variant (variants stacked along the batch, resumed at the
receiver's block: the prefix before it is unchanged). `run_mixed` runs many swaps at once
(every receiver of every block, current sender values recomputed in that same forward): circuit
evaluation. The gradient methods (`interp.analyses.edges_grad`) take each receiver's gradient
from one forward instead, pulled back through the same sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.analyses.edges_graph import KINDS, Layout
from interp.analyses.patching import pair_readout
from interp.analyses.sweep import Hooks, ProgressFn, resume, sweep
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import ExactnessError, UnsupportedError
from interp.core.hooks import HookFn, caching_hooks
from interp.core.metrics import Metric
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Int, Tensor
from interp.data.pairs import PairBatch

Senders = Float[Tensor, "sender prompt pos d_model"]
Write = tuple[slice, int, Tensor]  # (rows, head, recorded q/k/v of those rows (rows, pos, heads, d_head))


class _Stop(Exception):
    """Raised by a hook to end pass 1 once the attention's inputs are recorded."""


def _close(a: Tensor, b: Tensor, what: str, model: HookedModel) -> None:
    err = float((a.float() - b.float()).abs().max())
    if err > 1e-4 * max(1.0, float(b.float().abs().max())):
        raise ExactnessError(f"edge attribution on {model.spec.architecture}: {what} (max deviation {err:.2e}); "
                             "contributions do not add up here, so edges would not be exact")


def head_outputs(model: HookedModel, layer: int, z: Tensor) -> Float[Tensor, "head batch pos d_model"]:
    """Each head's contribution z_h @ W_O[h] to the residual stream."""
    return torch.einsum("bphk,hkd->hbpd", z, model.W_O(layer).to(z.dtype))  # type: ignore[attr-defined]


def _sender_sites(model: HookedModel) -> list[Site]:
    sites = [Site("resid_pre", layer=0), Site("resid_final")]
    return sites + [Site(c, layer=layer) for layer in range(model.spec.n_layers) for c in ("z", "attn_out", "mlp_out")]


@torch.no_grad()
def sender_outputs(model: HookedModel,
                   tokens: Int[Tensor, "prompt pos"]) -> tuple[Senders, Float[Tensor, "prompt pos d_model"]]:
    """Every sender's output on `tokens` (input, then per layer each head and the MLP) and the
    final residual (`senders_from_cache`); the forward stops at the final residual."""
    store: dict[Site, Tensor] = {}
    forward_to_final(model, tokens, caching_hooks(_sender_sites(model), store))
    return senders_from_cache(model, store)


def forward_to_final(model: HookedModel, tokens: Int[Tensor, "prompt pos"], hooks: Hooks) -> None:
    """The model's own forward on `tokens` with `hooks`, ended once the final residual (the
    final norm's input) has been handed to them: the output head is not computed."""
    try:
        with model.hooks([*hooks, (Site("resid_final"), _stop)]):
            model.forward(tokens.to(model.device))
    except _Stop:
        return
    raise UnsupportedError(f"edge attribution on {model.spec.architecture}: the forward never reached the "
                           "final residual (site resid_final)")


def senders_from_cache(model: HookedModel, cache: dict[Site, Tensor]) -> tuple[Senders, Tensor]:
    """The senders' outputs from cached sites; checks that heads + output bias give the attention
    output and that the senders + biases give the final residual."""
    H = model.spec.n_heads
    first = cache[Site("resid_pre", layer=0)]
    out = first.new_empty(1 + model.spec.n_layers * (H + 1), *first.shape)
    out[0] = first
    bias_total: Tensor | float = 0.0
    for layer in range(model.spec.n_layers):
        heads = out[1 + layer * (H + 1): 1 + layer * (H + 1) + H]
        heads.copy_(head_outputs(model, layer, cache[Site("z", layer=layer)]))
        b = model.out_proj_bias(layer)  # type: ignore[attr-defined]
        attn = heads.sum(0)
        if b is not None:
            attn += b.to(attn.dtype)
            bias_total = bias_total + b.to(attn.dtype)
        _close(attn, cache[Site("attn_out", layer=layer)], f"layer {layer}'s heads z_h W_O[h] + bias are not its "
               "attention output", model)
        out[1 + layer * (H + 1) + H] = cache[Site("mlp_out", layer=layer)]
    final = cache[Site("resid_final")]
    _close(out.sum(0) + bias_total, final, "the senders' outputs do not sum to the final residual", model)
    return out, final


def qkv_sites(model: HookedModel, layer: int) -> dict[str, Site]:
    """Where each head's query / key / value is recorded and written: after the q/k norms and
    rotary where the backend exposes them (per-head maps, so one head's value is its own)."""
    out = {}
    for kind in KINDS:
        comp = {"q": "q_rot", "k": "k_rot", "v": "v"}[kind]
        if comp != "v" and not model.supports(comp):  # type: ignore[attr-defined]
            comp = kind
        out[kind] = Site(comp, layer=layer)
    return out


def _keep(store: dict[str, Tensor], name: str) -> HookFn:
    def fn(t: Tensor, _s: Site) -> None:
        store[name] = t

    return fn


def _stop(_t: Tensor, _s: Site) -> None:
    raise _Stop


def record_block(model: HookedModel, inputs: BlockInputs, layer: int, x: Tensor, copies: int, *,
                 extra: Sequence[tuple[Site, HookFn]] = (), mlp: bool = False) -> dict[str, Tensor]:
    """Pass 1: block `layer` of the model on `x` (`copies` stacked batches): its q, k, v (and with
    `mlp` its MLP output), stopped after the attention's inputs where the model has a site there."""
    rec: dict[str, Tensor] = {}
    hooks: Hooks = list(extra)
    hooks += [(site, _keep(rec, kind)) for kind, site in qkv_sites(model, layer).items()]
    if mlp:
        hooks.append((Site("mlp_out", layer=layer), _keep(rec, "mlp")))
    elif model.supports("attn_scores"):  # type: ignore[attr-defined]
        hooks.append((Site("attn_scores", layer=layer), _stop))
    try:
        resume(model, inputs, layer, copies, hooks, x=x, end_layer=layer + 1)
    except _Stop:
        pass
    missing = [k for k in (*KINDS, *(["mlp"] if mlp else [])) if k not in rec]
    if missing:
        raise UnsupportedError(f"edge attribution on {model.spec.architecture}: the {', '.join(missing)} of layer "
                               f"{layer} were not reached before its attention scores")
    return rec


# ------------------------------------------------------------------------- pass 2: writing heads


def head_write_hooks(model: HookedModel, layer: int, writes: dict[str, list[Write]]) -> Hooks:
    """Hooks giving each (rows, head) its recorded query / key / value (grouped-query keys and
    values through recomputed scores / outputs, see the module docstring)."""
    H, KV = model.spec.n_heads, model.spec.n_kv_heads
    grouped = KV != H
    sites = qkv_sites(model, layer)
    hooks: Hooks = []
    for kind in KINDS:
        if writes.get(kind) and (kind == "q" or not grouped):
            hooks.append((sites[kind], _in_place(writes[kind])))
    if grouped and (writes.get("k") or writes.get("v")):
        hooks += _grouped_hooks(model, layer, writes.get("k", []), writes.get("v", []), H // KV, sites)
    return hooks


def _in_place(ws: list[Write]) -> HookFn:
    def fn(t: Tensor, _s: Site) -> Tensor:
        t = t.clone()
        for rows, h, src in ws:
            t[rows, :, h] = src[:, :, h].to(t.dtype)
        return t

    return fn


def _grouped_hooks(model: HookedModel, layer: int, k_ws: list[Write], v_ws: list[Write], group: int,
                   sites: dict[str, Site]) -> Hooks:
    for comp in ("attn_scores", "pattern", "z"):
        if not model.supports(comp):  # type: ignore[attr-defined]
            raise UnsupportedError(f"edge attribution on {model.spec.architecture}: key/value receivers under "
                                   f"grouped-query attention need site {comp!r}, which is not supported there")
    scale, cap = model.attention_scale(layer), model.attention_softcap(layer)  # type: ignore[attr-defined]
    now: dict[str, Tensor] = {}
    arch = f"{model.spec.architecture} layer {layer}"

    def scores(t: Tensor, _s: Site) -> Tensor:
        q, k = now["q"], now["k"]
        check_recompute(q[:, :, 0].detach(), k[:, :, 0].detach(), t[:, 0].detach(), scale=scale, softcap=cap,
                        what=arch)
        t = t.clone()
        for rows, h, src in k_ws:
            t[rows, h] = recompute_scores(q[rows, :, h], src[:, :, h // group], t[rows, h], scale=scale, softcap=cap)
        return t

    def z(t: Tensor, _s: Site) -> Tensor:
        pattern, v = now["pattern"], now["v"]
        mine = torch.einsum("bqk,bkd->bqd", pattern[:, 0].detach().float(), v[:, :, 0].detach().float())
        err = float((mine - t[:, :, 0].detach().float()).abs().max())
        if err > 1e-4 * max(1.0, float(t[:, :, 0].detach().float().abs().max())):
            raise UnsupportedError(f"{arch}: a head's output is not its pattern times its values (max deviation "
                                   f"{err:.2e}), so value receivers cannot be swapped per query head")
        t = t.clone()
        for rows, h, src in v_ws:
            t[rows, :, h] = torch.einsum("bqk,bkd->bqd", pattern[rows, h], src[:, :, h // group].to(pattern.dtype))
        return t

    hooks: Hooks = [(sites["q"], _keep(now, "q")), (sites["k"], _keep(now, "k")),
                    (Site("pattern", layer=layer), _keep(now, "pattern")), (Site("v", layer=layer), _keep(now, "v"))]
    if k_ws:
        hooks.append((Site("attn_scores", layer=layer), scores))
    if v_ws:
        hooks.append((Site("z", layer=layer), z))
    return hooks


def _rows(j: int, n: int) -> slice:
    return slice(j * n, (j + 1) * n)


# ------------------------------------------------------------------------- one edge per variant


@dataclass
class PairRuns:
    """A batch's clean block inputs and the senders' outputs on the clean and corrupt prompts."""

    inputs: BlockInputs
    clean: Senders
    corrupt: Senders
    final: Float[Tensor, "prompt pos d_model"]

    @classmethod
    @torch.no_grad()
    def of(cls, model: HookedModel, pb: PairBatch) -> PairRuns:
        """Two forwards: the clean one captures the block inputs and the senders' outputs."""
        cache: dict[Site, Tensor] = {}
        with model.hooks(caching_hooks(_sender_sites(model), cache)):
            inputs = model.capture_block_inputs(pb.clean.to(model.device))  # type: ignore[attr-defined]
        clean, final = senders_from_cache(model, cache)
        corrupt, _ = sender_outputs(model, pb.corrupt)
        return cls(inputs, clean, corrupt, final)


@torch.no_grad()
def exact_sweep(model: HookedModel, pb: PairBatch, lay: Layout, pairs_of: Sequence[tuple[int, int]], metric: Metric,
                *, batch_size: int = 64, progress: ProgressFn | None = None) -> Float[Tensor, "edge prompt"]:
    """Per-prompt metric with one edge (sender, receiver) swapped to its corrupt value per variant."""
    runs = PairRuns.of(model, pb)
    delta = runs.corrupt - runs.clean
    n = len(pb)

    def run_chunk(layer: int, _start: int, chunk: list[int]) -> Tensor:
        k = len(chunk)
        sr = [pairs_of[i] for i in chunk]
        if layer == lay.n_layers:
            return runs.final.repeat(k, 1, 1) + torch.cat([delta[s] for s, _ in sr])
        x = runs.inputs.resid_pre[layer].repeat(k, 1, 1)
        mlp_rows = {j: delta[s] for j, (s, r) in enumerate(sr) if r == lay.mlp_receiver(layer)}
        for j, (s, _r) in enumerate(sr):
            if j not in mlp_rows:
                x[_rows(j, n)] += delta[s]
        extra = [(Site("resid_mid", layer=layer), _add_rows(mlp_rows, n))] if mlp_rows else []
        rec = record_block(model, runs.inputs, layer, x, k, extra=extra, mlp=bool(mlp_rows))
        writes: dict[str, list[Write]] = {kind: [] for kind in KINDS}
        for j, (_s, r) in enumerate(sr):
            if j not in mlp_rows:
                h, kind = divmod(r - layer * lay.per_layer, 3)
                writes[KINDS[kind]].append((_rows(j, n), h, rec[KINDS[kind]][_rows(j, n)]))
        hooks = head_write_hooks(model, layer, writes)
        if mlp_rows:
            hooks.append((Site("mlp_out", layer=layer), _set_rows(list(mlp_rows), n, rec["mlp"])))
        return resume(model, runs.inputs, layer, k, hooks)

    keys = [(lay.receiver_layer(r), 0) for _, r in pairs_of]
    return sweep(model, n, keys, run_chunk, pair_readout(model, pb, metric), batch_size=batch_size, progress=progress)


def _add_rows(deltas: dict[int, Tensor], n: int) -> HookFn:
    def fn(t: Tensor, _s: Site) -> Tensor:
        t = t.clone()
        for j, d in deltas.items():
            t[_rows(j, n)] += d.to(t.dtype)
        return t

    return fn


def _set_rows(js: list[int], n: int, src: Tensor) -> HookFn:
    def fn(t: Tensor, _s: Site) -> Tensor:
        t = t.clone()
        for j in js:
            t[_rows(j, n)] = src[_rows(j, n)].to(t.dtype)
        return t

    return fn


# ------------------------------------------------------------------------- many swaps at once


def run_mixed(model: HookedModel, inputs: BlockInputs, lay: Layout, copies: int, x0: Tensor, src: Senders,
              ablate: Tensor) -> Float[Tensor, "rows pos d_model"]:
    """The final residual (as the logits receive it) of `copies` stacked variants of the base run
    resumed from block 0 on `x0`, every receiver's input swapped: receiver r of variant c gets
    input_r + sum_s ablate[c, r, s] (src_s - a_s,current), a_s,current the sender's output in this
    very forward."""
    run = _Mixed(model, inputs, lay, copies, src, ablate)
    run.diffs[0] = src[0].repeat(copies, 1, 1) - x0
    x = x0
    for layer in range(lay.n_layers):
        x = run.layer(layer, x)
    return run.swapped(x, lay.logits_receiver, 1, lay.n_senders)


class _Mixed:
    def __init__(self, model: HookedModel, inputs: BlockInputs, lay: Layout, copies: int, src: Senders,
                 ablate: Tensor) -> None:
        self.model, self.inputs, self.lay, self.copies, self.src, self.ablate = model, inputs, lay, copies, src, ablate
        x = inputs.resid_pre[0]
        # (sender, copies * n, pos, d): src_s - a_s,current
        self.diffs = torch.empty(lay.n_senders, copies * x.shape[0], *x.shape[1:], dtype=x.dtype, device=x.device)

    def layer(self, layer: int, x: Tensor) -> Tensor:
        """Block `layer` with every receiver in it swapped: the residual entering the next block."""
        H, lay, copies = self.lay.n_heads, self.lay, self.copies
        first, r0 = 1 + layer * (H + 1), layer * lay.per_layer
        X = self.swapped(x, r0, 3 * H, first)
        rec = record_block(self.model, self.inputs, layer, X, 3 * H * copies)
        rows = x.shape[0]
        writes: dict[str, list[Write]] = {kind: [] for kind in KINDS}
        for r in range(3 * H):
            h, kind = divmod(r, 3)
            writes[KINDS[kind]].append((slice(None), h, rec[KINDS[kind]][_rows(r, rows)]))
        now: dict[str, Tensor] = {}
        hooks = head_write_hooks(self.model, layer, writes)
        hooks += [(Site("z", layer=layer), _keep(now, "z")), (Site("resid_mid", layer=layer), self._mlp_in(layer, now)),
                  (Site("mlp_out", layer=layer), _keep(now, "mlp"))]
        resume(self.model, self.inputs, layer, copies, hooks, x=x, end_layer=layer + 1)
        self.diffs[first + H] = self.src[first + H].repeat(copies, 1, 1) - now["mlp"]
        return now["mid"] + now["mlp"]

    def _mlp_in(self, layer: int, now: dict[str, Tensor]) -> HookFn:
        H = self.lay.n_heads
        first = 1 + layer * (H + 1)

        def fn(t: Tensor, _s: Site) -> Tensor:
            now["mid"] = t
            self.diffs[first:first + H] = self.src[first:first + H].repeat(1, self.copies, 1, 1) - head_outputs(
                self.model, layer, now["z"])
            return self.swapped(t, self.lay.mlp_receiver(layer), 1, first + H)

        return fn

    def swapped(self, x: Tensor, r0: int, k: int, n_up: int) -> Tensor:
        """The inputs of receivers r0..r0+k-1, stacked receiver-major: (k * rows, pos, d)."""
        a = self.ablate[:, r0:r0 + k, :n_up].to(x.dtype)  # (copies, k, n_up)
        d = self.diffs[:n_up].reshape(n_up, self.copies, -1)  # (n_up, copies, n * pos * d_model)
        delta = torch.einsum("crs,scm->rcm", a, d)
        return (x.reshape(1, self.copies, -1) + delta).reshape(k * x.shape[0], *x.shape[1:])
