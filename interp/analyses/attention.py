"""The attention pattern of one head on one prompt: softmax(q k^T / sqrt(d)) per (query, key).

Read from the model's `pattern` site (TransformerLens' `hook_pattern`), so it is exactly what
the head attended to in the forward pass (causal mask and, for grouped-query attention, the
shared key/value head included). Rows are query positions and sum to 1.

    res = attention_pattern(model, "When Mary and John went to the store, John gave", 9, 6)
    res.tokens                    # ['When', ' Mary', ...]
    res.pattern[-1].argmax()      # the key position the last token attends to most
    res.to_frame()                # query, key, query_token, key_token, weight
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Tensor

__all__ = ["AttentionPatternResult", "attention_pattern"]


@dataclass(frozen=True)
class AttentionPatternResult:
    """One head's attention weights on one prompt; `pattern[q, k]` is how much query position
    q attends to key position k (rows sum to 1, k > q is 0 in a causal model)."""

    tokens: list[str]
    pattern: Float[Tensor, "query key"]
    layer: int
    head: int
    axes: tuple[str, str] = ("query", "key")

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    def top_keys(self, query: int = -1, k: int = 3) -> pd.DataFrame:
        """The `k` key positions that query position `query` attends to most."""
        row = self.pattern[query].detach().float().cpu()
        weights, keys = row.topk(min(k, row.numel()))
        return pd.DataFrame(
            {"key": keys.tolist(), "token": [self.tokens[i] for i in keys.tolist()], "weight": weights.tolist()}
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, key) with both tokens and the attention weight."""
        p = self.pattern.detach().float().cpu()
        n_q, n_k = p.shape
        q_idx = torch.arange(n_q).repeat_interleave(n_k)
        k_idx = torch.arange(n_k).repeat(n_q)
        return pd.DataFrame(
            {
                "query": q_idx.numpy(),
                "key": k_idx.numpy(),
                "query_token": [self.tokens[i] for i in q_idx.tolist()],
                "key_token": [self.tokens[i] for i in k_idx.tolist()],
                "weight": p.reshape(-1).numpy(),
                "layer": self.layer,
                "head": self.head,
            }
        )


def _tokens(model: HookedModel, text_or_tokens: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(text_or_tokens, str):
        if not text_or_tokens.strip():
            raise InterpError("the prompt is empty; give some text to look at")
        return model.to_tokens(text_or_tokens)
    toks = torch.as_tensor(text_or_tokens, dtype=torch.long)
    if toks.ndim == 2 and toks.shape[0] == 1:
        toks = toks[0]
    if toks.ndim != 1 or toks.numel() == 0:
        raise InterpError(
            f"expected one prompt: a string or a 1-d token sequence, got shape {tuple(toks.shape)}"
        )
    return toks.unsqueeze(0).to(model.device)


@torch.no_grad()
def attention_pattern(
    model: HookedModel, text_or_tokens: str | Sequence[int] | torch.Tensor, layer: int, head: int
) -> AttentionPatternResult:
    """The (query, key) attention pattern of head `head` in layer `layer` on one prompt."""
    n_layers, n_heads = model.spec.n_layers, model.spec.n_heads
    if not 0 <= int(layer) < n_layers or not 0 <= int(head) < n_heads:
        raise InterpError(
            f"no head L{layer}H{head} in {model.name}: layers 0..{n_layers - 1}, "
            f"heads 0..{n_heads - 1}"
        )
    toks = _tokens(model, text_or_tokens)
    site = Site("pattern", layer=int(layer), head=int(head))
    _, cache = model.run_with_cache(toks, [site])
    pattern = cache[site][0].float().cpu()  # (query, key)
    return AttentionPatternResult(model.str_tokens(toks[0]), pattern, int(layer), int(head))
