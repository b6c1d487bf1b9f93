"""Attribution patching (Nanda 2023; AtP*, Kramar et al. 2024, arXiv 2403.00745).

A first-order estimate of activation patching for every site at once: the effect of patching
activation a (denoising: clean value into the corrupt run) is

    effect(a) ~ (a_clean - a_corrupt) . dM/da |corrupt run

from one clean forward (cached), one corrupt forward and one backward of the summed metric.
Estimates are reported as `PatchingResult`s whose values are m_corrupt + effect, so they are
directly comparable with exact patching (`agreement` gives Spearman / Pearson / top-k overlap).

Sites: each head's output z (all positions), each MLP output (all positions), and resid_pre /
attn_out / mlp_out per (layer, position) on the largest batch of equal-length prompts.

AtP*'s QK fix (`qk_fix=True`): linearising through the softmax misses saturated attention, so
for each head's queries and keys the attention pattern after patching is recomputed exactly
(softmax of the patched scores) and only the step from the pattern to the metric is linear:
effect = sum (A_patched - A_corrupt) . dM/dA. Keys are patched per query head (grouped-query
attention: the head's own view of its KV group). This gives the "q" and "k" head maps.
Known remaining false negatives (AtP* GradDrop for cancellation) are not implemented.

    res = attribution_patching(model, pairs)
    agreement(res.results["z"], patch_heads(model, pairs))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp.analyses.results import PatchingResult
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import InterpError
from interp.core.metrics import Metric, Targets, get_metric, readout
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.data.pairs import PairBatch, TokenizedPairs

POSITION_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")


@dataclass(frozen=True)
class AttributionResult:
    results: dict[str, PatchingResult]  # "z", "mlp", "residual", and with qk_fix "q", "k"
    n_forward: int
    n_backward: int


def _grads_on(model: HookedModel, tokens: torch.Tensor, sites: Sequence[Site], pb: PairBatch, metric: Metric):
    """One forward + backward on `tokens`: activations and metric gradients at `sites`."""
    acts: dict[Site, torch.Tensor] = {}
    grads: dict[Site, torch.Tensor] = {}

    def leaf(t: torch.Tensor, _s: Site) -> torch.Tensor:
        return t.detach().requires_grad_(True)  # weights are frozen: start the graph here

    def capture(t: torch.Tensor, s: Site) -> torch.Tensor:
        acts[s] = t.detach()
        if t.requires_grad:
            t.register_hook(lambda g, s=s: grads.__setitem__(s, g.detach()))
        return t

    with torch.enable_grad(), model.hooks([(Site("embed"), leaf), *((s, capture) for s in sites)]):
        per_prompt = _metric_of(model.forward(tokens)[:, -1], pb, metric)
        per_prompt.sum().backward()
    return acts, grads, per_prompt.detach()


def _metric_of(last_logits: torch.Tensor, pb: PairBatch, metric: Metric) -> torch.Tensor:
    return readout(metric, Targets(pb.answer_ids, pb.distractor_ids).to(last_logits.device)).score_vocab(last_logits)


@torch.no_grad()
def _batch_estimates(model: HookedModel, pb: PairBatch, metric: Metric, *, positions: bool, qk_fix: bool):
    L = model.spec.n_layers
    dev = model.device
    clean, corrupt = pb.clean.to(dev), pb.corrupt.to(dev)
    sites = [Site(c, layer=layer) for layer in range(L) for c in ("z", "mlp_out")]
    if positions:
        sites += [Site(c, layer=layer) for layer in range(L) for c in ("resid_pre", "attn_out")]
    if qk_fix:
        sites += [Site(c, layer=layer) for layer in range(L) for c in ("pattern", "attn_scores", "q_rot", "k_rot")]
    sites = list(dict.fromkeys(sites))
    clean_logits, clean_acts = model.run_with_cache(clean, sites)
    acts, grads, corrupt_metric = _grads_on(model, corrupt, sites, pb, metric)
    out: dict[str, torch.Tensor] = {
        "clean_metric": _metric_of(clean_logits[:, -1], pb, metric),
        "corrupt_metric": corrupt_metric,
    }
    # (prompt, layer, head): sum over positions and d_head
    out["z"] = torch.stack([
        ((clean_acts[Site("z", layer=l)] - acts[Site("z", layer=l)]) * grads[Site("z", layer=l)]).sum((1, 3))
        for l in range(L)], 1)  # noqa: E741
    out["mlp"] = torch.stack([
        ((clean_acts[Site("mlp_out", layer=l)] - acts[Site("mlp_out", layer=l)])
         * grads[Site("mlp_out", layer=l)]).sum((1, 2))
        for l in range(L)], 1)  # noqa: E741
    if positions:
        # (prompt, component, layer, position)
        out["residual"] = torch.stack([
            torch.stack([
                ((clean_acts[Site(c, layer=l)] - acts[Site(c, layer=l)]) * grads[Site(c, layer=l)]).sum(-1)
                for l in range(L)], 1)  # noqa: E741
            for c in POSITION_COMPONENTS], 1)
    if qk_fix:
        out["q"], out["k"] = _qk_fix(model, clean_acts, acts, grads)
    return out


def _qk_fix(model, clean_acts, acts, grads):
    """Exact softmax for patched queries / keys of each head, linear from the pattern on. The
    patched scores are rebuilt with the model's scale, softcap and own mask (windows included),
    after checking that the rebuild reproduces the model's scores on the corrupt run."""
    L, H = model.spec.n_layers, model.spec.n_heads
    group = H // model.spec.n_kv_heads
    q_eff, k_eff = [], []
    for layer in range(L):
        scale, cap = model.attention_scale(layer), model.attention_softcap(layer)
        scores = acts[Site("attn_scores", layer=layer)]  # (b, h, q, k), masked
        pattern = acts[Site("pattern", layer=layer)]
        g_pattern = grads[Site("pattern", layer=layer)]
        q_c, q_x = clean_acts[Site("q_rot", layer=layer)], acts[Site("q_rot", layer=layer)]  # (b, pos, h, d)
        k_c, k_x = clean_acts[Site("k_rot", layer=layer)], acts[Site("k_rot", layer=layer)]  # (b, pos, kv, d)
        check_recompute(q_x[:, :, 0], k_x[:, :, 0], scores[:, 0], scale=scale, softcap=cap,
                        what=f"AtP* QK fix on {model.spec.architecture} layer {layer}")
        qs, ks = [], []
        for h in range(H):
            kx = k_x[:, :, h // group]
            for which, store in (("q", qs), ("k", ks)):
                q = q_c[:, :, h] if which == "q" else q_x[:, :, h]
                k = kx if which == "q" else k_c[:, :, h // group]
                new = recompute_scores(q, k, scores[:, h], scale=scale, softcap=cap)
                a_new = new.float().softmax(-1).to(pattern.dtype)
                store.append(((a_new - pattern[:, h]) * g_pattern[:, h]).sum((1, 2)))
        q_eff.append(torch.stack(qs, 1))
        k_eff.append(torch.stack(ks, 1))
    return torch.stack(q_eff, 1), torch.stack(k_eff, 1)  # (prompt, layer, head)


def attribution_patching(
    model: HookedModel,
    pairs: TokenizedPairs,
    *,
    metric: str = "logit_diff",
    qk_fix: bool = False,
    residual: bool = True,
) -> AttributionResult:
    """AtP estimates (denoising) for heads, MLPs and (per position) the residual stream."""
    m = get_metric(metric)
    L, H = model.spec.n_layers, model.spec.n_heads
    largest = pairs.largest_batch()
    sums: dict[str, torch.Tensor] = {}
    clean_sum = corrupt_sum = 0.0
    n_total = 0
    n_fwd = n_bwd = 0
    for pb in pairs.by_length().batches:
        est = _batch_estimates(model, pb, m, positions=False, qk_fix=qk_fix)
        n_fwd, n_bwd = n_fwd + 2, n_bwd + 1
        clean_sum += float(est.pop("clean_metric").sum())
        corrupt_sum += float(est.pop("corrupt_metric").sum())
        for key, v in est.items():
            sums[key] = sums.get(key, 0) + v.float().cpu().sum(0)
        n_total += len(pb)
    mc, mx = clean_sum / n_total, corrupt_sum / n_total
    results = {
        "z": PatchingResult("attribution_patching_heads", "denoising", metric, ("layer", "head"),
                            mx + sums["z"].view(L, H) / n_total, mc, mx, n_total),
        "mlp": PatchingResult("attribution_patching_mlp", "denoising", metric, ("layer",),
                              mx + sums["mlp"].view(L) / n_total, mc, mx, n_total),
    }
    if qk_fix:
        for key in ("q", "k"):
            results[key] = PatchingResult(f"attribution_patching_{key}", "denoising", metric, ("layer", "head"),
                                          mx + sums[key].view(L, H) / n_total, mc, mx, n_total)
    if residual:
        est = _batch_estimates(model, largest, m, positions=True, qk_fix=False)
        n_fwd, n_bwd = n_fwd + 2, n_bwd + 1
        pc, px = float(est["clean_metric"].mean()), float(est["corrupt_metric"].mean())
        T = largest.clean.shape[1]
        results["residual"] = PatchingResult(
            "attribution_patching_residual", "denoising", metric, ("component", "layer", "position"),
            px + est["residual"].float().cpu().mean(0).view(len(POSITION_COMPONENTS), L, T), pc, px, len(largest),
            labels={"component": list(POSITION_COMPONENTS)}, token_labels=model.str_tokens(largest.clean[0]))
    return AttributionResult(results, n_fwd, n_bwd)


def agreement(estimate: PatchingResult, exact: PatchingResult, k: int = 10) -> dict[str, float]:
    """How well an estimate ranks sites like exact patching: Spearman and Pearson correlation
    of the effects, and the overlap of the top-k sites by |effect|."""
    if estimate.values.shape != exact.values.shape:
        raise InterpError(f"shapes differ: estimate {tuple(estimate.values.shape)} "
                          f"vs exact {tuple(exact.values.shape)}")
    e = (estimate.values - estimate.corrupt_metric).flatten().numpy()
    x = (exact.values - exact.corrupt_metric).flatten().numpy()
    if exact.direction == "noising":
        x = (exact.values - exact.clean_metric).flatten().numpy()
    return rank_agreement(e, x, k)


def rank_agreement(estimate: np.ndarray, exact: np.ndarray, k: int = 10) -> dict[str, float]:
    """Spearman and Pearson correlation of two effect vectors and the overlap of their top-k
    entries by |effect| (shared by the head and the edge analyses)."""
    s = pd.Series(estimate)
    t = pd.Series(exact)
    top_e = set(s.abs().sort_values(ascending=False).index[:k])
    top_x = set(t.abs().sort_values(ascending=False).index[:k])
    return {
        "spearman": float(s.corr(t, method="spearman")),
        "pearson": float(s.corr(t)),
        f"top{k}_overlap": len(top_e & top_x) / k,
        "n_sites": len(s),
    }
