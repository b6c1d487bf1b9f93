"""Direct logit attribution (DLA) at the last position.

The final residual is a sum of parts: the embeddings (the residual entering block 0), each
head's output `z_h @ W_O[h]`, each layer's attention bias (attn_out minus its heads), and each
MLP's output. With the final norm's scale frozen at its value in the actual run, the logit
difference `logit(answer) - logit(distractor)` is linear in those parts, so each part gets

    contribution = norm_frozen(part) . (W_U[:, answer] - W_U[:, distractor])

(RMSNorm: part * scale * w; LayerNorm: centred part * scale * w, with the norm's bias and the
unembedding bias as their own terms). The contributions sum to the model's logit difference;
`max_abs_error` reports by how much they do not (float error only; tests check < 1e-3 relative).

    dla = direct_logit_attribution(model, pairs)
    dla.to_frame().sort_values("contribution")   # label, kind, layer, head, contribution, std
"""

from __future__ import annotations

import torch

from interp.analyses.results import DLAResult
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.data.pairs import TokenizedPairs


def _project(part: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, direction: torch.Tensor,
             centre: bool) -> torch.Tensor:
    """(batch, d_model) part of the final residual -> (batch,) logit-difference contribution,
    through the final norm with its scale frozen (centred first for LayerNorm)."""
    part = part.float()
    if centre:
        part = part - part.mean(-1, keepdim=True)
    return (part * scale * weight * direction).sum(-1)


@torch.no_grad()
def direct_logit_attribution(model: HookedModel, pairs: TokenizedPairs) -> DLAResult:
    L, H = model.spec.n_layers, model.spec.n_heads
    labels: list[str] = ["embed"]
    kinds: list[str] = ["embed"]
    layers: list[int | None] = [None]
    heads: list[int | None] = [None]
    for layer in range(L):
        for h in range(H):
            labels.append(f"L{layer}H{h}")
            kinds.append("head")
            layers.append(layer)
            heads.append(h)
        labels += [f"L{layer}.attn_bias", f"MLP{layer}"]
        kinds += ["attn_bias", "mlp"]
        layers += [layer, layer]
        heads += [None, None]
    labels += ["final_norm_bias", "unembed_bias"]
    kinds += ["bias", "bias"]
    layers += [None, None]
    heads += [None, None]

    norm = model.final_norm()
    W_U, b_U = model.unembed_matrix()
    W_U = W_U.float()
    rows: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
    for pb in pairs.by_length().batches:
        sites = [Site("resid_pre", layer=0, position=-1), Site("resid_final", position=-1)]
        for layer in range(L):
            sites += [Site("z", layer=layer, position=-1), Site("attn_out", layer=layer, position=-1),
                      Site("mlp_out", layer=layer, position=-1)]
        logits, cache = model.run_with_cache(pb.clean.to(model.device), sites)
        a, d = pb.answer_ids.to(model.device), pb.distractor_ids.to(model.device)
        r = torch.arange(len(pb), device=model.device)
        actual = (logits[r, -1, a] - logits[r, -1, d]).float()
        direction = (W_U[:, a] - W_U[:, d]).T  # (batch, d_model)

        x = cache[Site("resid_final", position=-1)].float()
        w = norm.weight.float()
        centre = norm.kind == "layernorm"
        if centre:
            scale = torch.rsqrt((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + norm.eps)
        else:
            scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)

        def attribute(part: torch.Tensor) -> torch.Tensor:
            return _project(part, scale, w, direction, centre)  # noqa: B023 (used in this iteration only)

        cols = [attribute(cache[Site("resid_pre", layer=0, position=-1)])]
        for layer in range(L):
            z = cache[Site("z", layer=layer, position=-1)].float()  # (batch, head, d_head)
            head_out = torch.einsum("bhd,hdm->bhm", z, model.W_O(layer).float())
            cols += [attribute(head_out[:, h]) for h in range(H)]
            cols.append(attribute(cache[Site("attn_out", layer=layer, position=-1)].float() - head_out.sum(1)))
            cols.append(attribute(cache[Site("mlp_out", layer=layer, position=-1)]))
        ln_bias = (norm.bias.float() * direction).sum(-1) if norm.bias is not None else torch.zeros_like(actual)
        u_bias = (b_U[a] - b_U[d]).float() if b_U is not None else torch.zeros_like(actual)
        cols += [ln_bias, u_bias]
        rows.append((pb.indices, torch.stack(cols, 1).cpu(), actual.cpu()))

    n = sum(len(i) for i, _, _ in rows)
    contrib = torch.zeros(n, len(labels))
    actual_all = torch.zeros(n)
    for idx, c, act in rows:
        contrib[idx] = c
        actual_all[idx] = act
    err = float((contrib.sum(1) - actual_all).abs().max())
    return DLAResult(labels, kinds, layers, heads, contrib, actual_all, err)
