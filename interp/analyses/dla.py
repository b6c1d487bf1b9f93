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

import torch

from interp.analyses.results import DLAResult
from interp.core.errors import ExactnessError, UnsupportedError
from interp.core.model import HookedModel
from interp.core.norms import AffineNorm, probe_norm
from interp.core.sites import Site
from interp.data.pairs import TokenizedPairs

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


@torch.no_grad()
def direct_logit_attribution(model: HookedModel, pairs: TokenizedPairs) -> DLAResult:
    L, H, D = model.spec.n_layers, model.spec.n_heads, model.spec.d_model
    facts = _facts(model)
    tail = facts.tail
    labels, kinds, layers, heads = _labels(L, H, tail.softcap is not None)
    final = probe_norm(model.final_norm_module(), D, name="final norm")
    posts: list[AffineNorm | None] = []
    for layer in range(L):
        mod = model.post_norm_module(layer, "attn")
        posts.append(probe_norm(mod, D, name=f"L{layer} post-attention norm") if mod is not None else None)
    mult = facts.residual_multiplier
    W_U, b_U = model.unembed_matrix()
    W_U = W_U.float()
    approximations = ["final norm scale frozen at the actual run"]
    if any(p is not None for p in posts):
        approximations.append("post-attention norm scale frozen at the actual run (per layer); "
                              "the remainder of each layer is its own term")
    if tail.softcap is not None:
        approximations.append(f"final logit softcap {tail.softcap:g}: parts attributed before it, "
                              "its change of the logit difference is the term 'final_softcap'")

    rows: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
    worst_remainder = 0.0
    for pb in pairs.by_length().batches:
        sites = [Site("resid_pre", layer=0, position=-1), Site("resid_final", position=-1)]
        for layer in range(L):
            sites += [Site("z", layer=layer, position=-1), Site("attn_out", layer=layer, position=-1),
                      Site("mlp_out", layer=layer, position=-1)]
        logits, cache = model.run_with_cache(pb.clean.to(model.device), sites)
        a, d = pb.answer_ids.to(model.device), pb.distractor_ids.to(model.device)
        r = torch.arange(len(pb), device=model.device)
        actual = (logits[r, -1, a] - logits[r, -1, d]).float()
        direction = (W_U[:, a] - W_U[:, d]).T * tail.scale  # (batch, d_model)
        x = cache[Site("resid_final", position=-1)]
        s = final.scale(x)

        def attribute(part: torch.Tensor) -> torch.Tensor:
            return (final.linear(part, s) * direction).sum(-1)  # noqa: B023 (this batch only)

        embed = cache[Site("resid_pre", layer=0, position=-1)].float()
        total = embed.clone()
        cols = [attribute(embed)]
        for layer in range(L):
            z = cache[Site("z", layer=layer, position=-1)].float()  # (batch, head, d_head)
            head_out = torch.einsum("bhd,hdm->bhm", z, model.W_O(layer).float())
            b_O = model.out_proj_bias(layer)
            b_O = torch.zeros(D, device=z.device) if b_O is None else b_O.float()
            attn = cache[Site("attn_out", layer=layer, position=-1)].float()
            post = posts[layer]
            if post is not None:
                s_post = post.scale(head_out.sum(1) + b_O)
                terms = mult * post.linear(head_out, s_post.unsqueeze(1))
                bias = mult * (post.linear(b_O.expand_as(attn), s_post) + post.bias)
            else:
                terms = mult * head_out
                bias = mult * b_O.expand_as(attn)
            remainder = attn - terms.sum(1) - bias
            head_cols = [attribute(terms[:, h]) for h in range(H)]
            rem_col = attribute(remainder)
            scale = max(1.0, max(float(c.abs().max()) for c in head_cols))
            worst_remainder = max(worst_remainder, float(rem_col.abs().max()) / scale)
            if float(rem_col.abs().max()) > REMAINDER_RTOL * scale:
                raise ExactnessError(
                    f"DLA: layer {layer}'s attention output of {model.spec.architecture} is not its heads' terms "
                    f"plus the projection bias (remainder {float(rem_col.abs().max()):.3g} in logit units vs "
                    f"{scale:.3g}); the per-head numbers would be wrong")
            mlp = cache[Site("mlp_out", layer=layer, position=-1)].float()
            cols += [*head_cols, attribute(bias), rem_col, attribute(mlp)]
            total = total + attn + mlp
        resid_err = float((total - x.float()).abs().max() / x.float().abs().max().clamp_min(1e-6))
        if resid_err > 1e-4:
            raise ExactnessError(
                f"DLA: embeddings + attention + MLP outputs do not add up to the final residual of "
                f"{model.spec.architecture} (relative error {resid_err:.2e}); its attn_out/mlp_out sites are "
                "not the residual contributions")
        cols.append((final.bias * direction).sum(-1))
        u_bias = ((b_U[a] - b_U[d]).float() * tail.scale) if b_U is not None else torch.zeros_like(actual)
        cols.append(u_bias)
        if tail.softcap is not None:
            # the logits before the softcap, from the model's own norm and lm_head
            y = model.final_norm_module()(x).float()
            raw_a = (y * W_U[:, a].T).sum(-1) * tail.scale
            raw_d = (y * W_U[:, d].T).sum(-1) * tail.scale
            if b_U is not None:
                raw_a = raw_a + b_U[a].float() * tail.scale
                raw_d = raw_d + b_U[d].float() * tail.scale
            cap = tail.softcap
            capped = cap * torch.tanh(raw_a / cap) - cap * torch.tanh(raw_d / cap)
            cols.append(capped - (raw_a - raw_d))
        rows.append((pb.indices, torch.stack(cols, 1).cpu(), actual.cpu()))

    n = sum(len(i) for i, _, _ in rows)
    contrib = torch.zeros(n, len(labels))
    actual_all = torch.zeros(n)
    for idx, c, act in rows:
        contrib[idx] = c
        actual_all[idx] = act
    err = float((contrib.sum(1) - actual_all).abs().max())
    bound = SUM_RTOL * max(1.0, float(actual_all.abs().max()))
    if err > bound:
        raise ExactnessError(
            f"DLA: the parts sum to the logit difference of {model.spec.architecture} only within {err:.3g} "
            f"(tolerance {bound:.3g}); refusing to report per-part numbers")
    return DLAResult(labels, kinds, layers, heads, contrib, actual_all, err,
                     approximations=tuple(approximations), max_remainder=worst_remainder)
