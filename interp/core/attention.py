"""Attention scores recomputed for swapped queries or keys, exactly as the model scores them.

Some analyses need a head's scores with another query or other keys than the forward pass used
(path patching into keys, AtP*'s QK fix, MCQ query/key compression). The scores are rebuilt with
the model's own factor and softcap (`HookedModel.attention_scale` / `attention_softcap`), and
the mask is the model's own: entries the forward pass masked (causal triangle, sliding window,
padding; they hold about `finfo.min`) keep the model's value, so windows need no formula here.

`check_recompute` compares the rebuild on the unpatched inputs with the model's own scores and
raises `UnsupportedError` when they differ, so a family whose attention computes scores some
other way is refused, not silently mis-scored.

    new = recompute_scores(q_h, keys, like=scores[:, h], scale=s, softcap=cap)   # (batch, q, k)
"""

from __future__ import annotations

import torch

from interp.core.errors import UnsupportedError


def masked_entries(scores: torch.Tensor) -> torch.Tensor:
    """Where the model masked the scores (bool, same shape)."""
    return scores.float() < torch.finfo(torch.float32).min / 2 if scores.dtype == torch.float32 else \
        scores < torch.finfo(scores.dtype).min / 2


def recompute_scores(q: torch.Tensor, k: torch.Tensor, like: torch.Tensor, *, scale: float,
                     softcap: float | None) -> torch.Tensor:
    """Scores (batch, q, k) of queries `q` (batch, q, d) against keys `k` (batch, k, d), with the
    model's masked entries taken from `like` (the model's own scores for this head)."""
    new = torch.einsum("bqd,bkd->bqk", q.float(), k.float()) * scale
    if softcap is not None:
        new = torch.tanh(new / softcap) * softcap
    return torch.where(masked_entries(like), like, new.to(like.dtype))


def check_recompute(q: torch.Tensor, k: torch.Tensor, like: torch.Tensor, *, scale: float,
                    softcap: float | None, what: str, rtol: float = 1e-4) -> None:
    """Raise unless recomputing from the unpatched `q`, `k` reproduces the model's scores."""
    new = recompute_scores(q, k, like, scale=scale, softcap=softcap)
    live = ~masked_entries(like)
    if not bool(live.any()):
        return
    err = float((new - like).float()[live].abs().max())
    ref = float(like.float()[live].abs().max())
    if err > rtol * max(1.0, ref):
        raise UnsupportedError(
            f"{what}: the attention scores cannot be recomputed as softcap(q . k * {scale:g}) with the "
            f"model's mask (max deviation {err:.2e} from the model's own scores), so swapped queries or "
            "keys would be scored wrongly")
