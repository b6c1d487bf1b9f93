"""Direct logit attribution (DLA) at the last position, exact or with its approximation stated.

The final residual is a sum of parts: the embeddings (the residual entering block 0), each
layer's attention contribution and each MLP's contribution (what each sublayer adds to the
residual: the bridge's `attn_out` / `mlp_out`, after any post-sublayer norm and residual
multiplier). Each attention contribution is split further into its heads' terms

    head h:  mult * postnorm_frozen(z_h @ W_O[h])

plus the output projection's bias pushed through the same map ("L3.attn_bias"), and what is
left ("L3.attn_remainder", its own named term, checked to be ~0: it is never folded into the
bias). Through the final norm, with its scale frozen at the actual run, the logit difference
`logit(answer) - logit(distractor)` is linear in the parts:

    contribution = norm_frozen(part) . (W_U[:, answer] - W_U[:, distractor]) * logit_scale

Norms are the model's own modules, read as affine maps (`interp.core.norms`), so Gemma's
`(1 + w)`, OLMo's parameter-free and Cohere's bias-free LayerNorms need no formula of ours.

Stated approximations (`DLAResult.approximations`), where the model is not linear in the parts:
- the final norm's scale is frozen at the actual run (always; standard DLA);
- post-sublayer norms (Gemma 2/3, OLMo 2): their scale is frozen at the actual run too;
- a final logit softcap (Gemma 2): the parts are attributed before it, and the softcap's change
  of the logit difference is the term "final_softcap".

The parts sum to the model's own logit difference (from the full forward); a sum off by more
than the tolerance, or an attention remainder above it, raises `ExactnessError` instead of
printing a wrong table.

    dla = direct_logit_attribution(model, pairs)
    dla.to_frame().sort_values("contribution")   # label, kind, layer, head, contribution, std
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from interp.analyses.results import DLAResult
from interp.core.errors import DatasetError, ExactnessError, UnsupportedError
from interp.core.model import HookedModel
from interp.core.norms import AffineNorm, probe_norm
from interp.core.sites import Site
from interp.data.pairs import PairBatch, TokenizedPairs

SUM_RTOL = 1e-3  # parts vs the model's logit difference, relative to max(1, |value|)
REMAINDER_RTOL = 1e-3  # an attention remainder vs max(1, largest head term)


def _labels(L: int, H: int, softcap: bool) -> tuple[list[str], list[str], list[int | None], list[int | None]]:
    labels, kinds, layers, heads = ["embed"], ["embed"], [None], [None]
    for layer in range(L):
        for h in range(H):
            labels.append(f"L{layer}H{h}")
            kinds.append("head")
            layers.append(layer)
            heads.append(h)
        labels += [f"L{layer}.attn_bias", f"L{layer}.attn_remainder", f"MLP{layer}"]
        kinds += ["attn_bias", "remainder", "mlp"]
        layers += [layer, layer, layer]
        heads += [None, None, None]
    labels += ["final_norm_bias", "unembed_bias"]
    kinds += ["bias", "bias"]
    layers += [None, None]
    heads += [None, None]
    if softcap:
        labels.append("final_softcap")
        kinds.append("softcap")
        layers.append(None)
        heads.append(None)
    return labels, kinds, layers, heads


def _facts(model: HookedModel):
    facts = getattr(model, "facts", None)
    if facts is None or not hasattr(model, "final_norm_module"):
        raise UnsupportedError(f"DLA needs the family facts and norm modules of {model.spec.architecture}; "
                               f"backend {model.backend!r} does not expose them")
    return facts


@dataclass(frozen=True)
class _Readers:
    """The model's pieces DLA reads, fetched once."""

    final: AffineNorm
    posts: list[AffineNorm | None]  # per layer, the post-attention norm (None: none)
    mult: float
    W_U: torch.Tensor
    b_U: torch.Tensor | None
    tail: object


def _readers(model: HookedModel) -> _Readers:
    D = model.spec.d_model
    facts = _facts(model)
    final = probe_norm(model.final_norm_module(), D, name="final norm")
    posts: list[AffineNorm | None] = []
    for layer in range(model.spec.n_layers):
        mod = model.post_norm_module(layer, "attn")
        posts.append(probe_norm(mod, D, name=f"L{layer} post-attention norm") if mod is not None else None)
    W_U, b_U = model.unembed_matrix()
    home = W_U.device  # every term is computed here (blocks may sit on other devices)
    final, posts = _on(final, home), [_on(p, home) if p is not None else None for p in posts]
    return _Readers(final, posts, facts.residual_multiplier, W_U.float(), b_U, facts.tail)


def _on(norm: AffineNorm, device: torch.device) -> AffineNorm:
    return replace(norm, weight=norm.weight.to(device), bias=norm.bias.to(device))


def _approximations(rd: _Readers) -> list[str]:
    out = ["final norm scale frozen at the actual run"]
    if any(p is not None for p in rd.posts):
        out.append("post-attention norm scale frozen at the actual run (per layer); "
                   "the remainder of each layer is its own term")
    if rd.tail.softcap is not None:  # type: ignore[attr-defined]
        out.append(f"final logit softcap {rd.tail.softcap:g}: parts attributed before it, "  # type: ignore[attr-defined]
                   "its change of the logit difference is the term 'final_softcap'")
    return out


def _sites(L: int) -> list[Site]:
    sites = [Site("resid_pre", layer=0, position=-1), Site("resid_final", position=-1)]
    for layer in range(L):
        sites += [Site("z", layer=layer, position=-1), Site("attn_out", layer=layer, position=-1),
                  Site("mlp_out", layer=layer, position=-1)]
    return sites


def _attention_parts(model: HookedModel, rd: _Readers, cache, layer: int):
    """Layer `layer`'s attention output as (per-head terms (batch, head, d), bias term, the
    attention output itself) at the last position."""
    D = model.spec.d_model
    z = cache[Site("z", layer=layer, position=-1)].float()  # (batch, head, d_head)
    head_out = torch.einsum("bhd,hdm->bhm", z, model.W_O(layer).float().to(z.device))
    b_O = model.out_proj_bias(layer)
    b_O = torch.zeros(D, device=z.device) if b_O is None else b_O.float().to(z.device)
    attn = cache[Site("attn_out", layer=layer, position=-1)].float()
    post = rd.posts[layer]
    if post is not None:
        s_post = post.scale(head_out.sum(1) + b_O)
        terms = rd.mult * post.linear(head_out, s_post.unsqueeze(1))
        bias = rd.mult * (post.linear(b_O.expand_as(attn), s_post) + post.bias)
    else:
        terms = rd.mult * head_out
        bias = rd.mult * b_O.expand_as(attn)
    return terms, bias, attn


def _check_remainder(model: HookedModel, layer: int, head_cols: list[torch.Tensor], rem_col: torch.Tensor) -> float:
    """The remainder relative to the largest head term; raises above `REMAINDER_RTOL`."""
    scale = max(1.0, max(float(c.abs().max()) for c in head_cols))
    if float(rem_col.abs().max()) > REMAINDER_RTOL * scale:
        raise ExactnessError(
            f"DLA: layer {layer}'s attention output of {model.spec.architecture} is not its heads' terms "
            f"plus the projection bias (remainder {float(rem_col.abs().max()):.3g} in logit units vs "
            f"{scale:.3g}); the per-head numbers would be wrong")
    return float(rem_col.abs().max()) / scale


def _check_residual(model: HookedModel, total: torch.Tensor, x: torch.Tensor) -> None:
    resid_err = float((total - x.float()).abs().max() / x.float().abs().max().clamp_min(1e-6))
    if resid_err > 1e-4:
        raise ExactnessError(
            f"DLA: embeddings + attention + MLP outputs do not add up to the final residual of "
            f"{model.spec.architecture} (relative error {resid_err:.2e}); its attn_out/mlp_out sites are "
            "not the residual contributions")


def _softcap_term(model: HookedModel, rd: _Readers, x: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The softcap's change of the logit difference, from the model's own norm and lm_head."""
    tail = rd.tail
    y = model.final_norm_module()(x).float().to(x.device)
    raw_a = (y * rd.W_U[:, a].T).sum(-1) * tail.scale  # type: ignore[attr-defined]
    raw_d = (y * rd.W_U[:, d].T).sum(-1) * tail.scale  # type: ignore[attr-defined]
    if rd.b_U is not None:
        raw_a = raw_a + rd.b_U[a].float() * tail.scale  # type: ignore[attr-defined]
        raw_d = raw_d + rd.b_U[d].float() * tail.scale  # type: ignore[attr-defined]
    cap = tail.softcap  # type: ignore[attr-defined]
    capped = cap * torch.tanh(raw_a / cap) - cap * torch.tanh(raw_d / cap)
    return capped - (raw_a - raw_d)


def _batch_parts(model: HookedModel, rd: _Readers, pb: PairBatch) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One batch: (contribution per (prompt, part), the model's logit difference, worst remainder)."""
    L, H = model.spec.n_layers, model.spec.n_heads
    tail = rd.tail
    logits, cache = model.run_with_cache(pb.clean.to(model.device), _sites(L))
    home = rd.W_U.device  # blocks may sit on several devices: the terms are computed on one
    logits, cache = logits.to(home), {site: t.to(home) for site, t in cache.items()}
    a, d = pb.answer_ids.to(home), pb.distractor_ids.to(home)
    r = torch.arange(len(pb), device=home)
    actual = (logits[r, -1, a] - logits[r, -1, d]).float()
    direction = (rd.W_U[:, a] - rd.W_U[:, d]).T * tail.scale  # type: ignore[attr-defined]  # (batch, d_model)
    x = cache[Site("resid_final", position=-1)]
    s = rd.final.scale(x)

    def attribute(part: torch.Tensor) -> torch.Tensor:
        return (rd.final.linear(part, s) * direction).sum(-1)

    embed = cache[Site("resid_pre", layer=0, position=-1)].float()
    total = embed.clone()
    cols = [attribute(embed)]
    worst = 0.0
    for layer in range(L):
        terms, bias, attn = _attention_parts(model, rd, cache, layer)
        head_cols = [attribute(terms[:, h]) for h in range(H)]
        rem_col = attribute(attn - terms.sum(1) - bias)
        worst = max(worst, _check_remainder(model, layer, head_cols, rem_col))
        mlp = cache[Site("mlp_out", layer=layer, position=-1)].float()
        cols += [*head_cols, attribute(bias), rem_col, attribute(mlp)]
        total = total + attn + mlp
    _check_residual(model, total, x)
    cols.append((rd.final.bias * direction).sum(-1))
    cols.append(((rd.b_U[a] - rd.b_U[d]).float() * tail.scale) if rd.b_U is not None  # type: ignore[attr-defined]
                else torch.zeros_like(actual))
    if tail.softcap is not None:  # type: ignore[attr-defined]
        cols.append(_softcap_term(model, rd, x, a, d))
    return torch.stack(cols, 1).cpu(), actual.cpu(), worst


@torch.no_grad()
def direct_logit_attribution(model: HookedModel, pairs: TokenizedPairs) -> DLAResult:
    """Each part's contribution to logit(answer) - logit(distractor) at the last position, per
    prompt; refuses (ExactnessError) where the parts do not sum to the model's own value."""
    if not pairs.batches:
        raise DatasetError("direct logit attribution needs at least one prompt pair; the dataset is empty")
    rd = _readers(model)
    labels, kinds, layers, heads = _labels(model.spec.n_layers, model.spec.n_heads, rd.tail.softcap is not None)  # type: ignore[attr-defined]
    contrib = torch.zeros(pairs.n, len(labels))
    actual_all = torch.zeros(pairs.n)
    worst_remainder = 0.0
    for pb in pairs.by_length().batches:
        contrib[pb.indices], actual_all[pb.indices], worst = _batch_parts(model, rd, pb)
        worst_remainder = max(worst_remainder, worst)
    err = float((contrib.sum(1) - actual_all).abs().max())
    bound = SUM_RTOL * max(1.0, float(actual_all.abs().max()))
    if err > bound:
        raise ExactnessError(
            f"DLA: the parts sum to the logit difference of {model.spec.architecture} only within {err:.3g} "
            f"(tolerance {bound:.3g}); refusing to report per-part numbers")
    return DLAResult(labels, kinds, layers, heads, contrib, actual_all, err,
                     approximations=tuple(_approximations(rd)), max_remainder=worst_remainder)
