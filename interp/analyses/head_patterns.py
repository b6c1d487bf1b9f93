"""Attention-pattern scores per head: previous-token, duplicate-token and induction heads.

Scored on sequences of random tokens repeated twice, [r_1 .. r_S, r_1 .. r_S] (the standard
test from Olsson et al. 2022 and TransformerLens' head detector):
- previous-token: mean attention from each position q >= 1 to q - 1 (both halves);
- duplicate-token: in the second half, mean attention from q to q - S (the earlier copy of
  the same token);
- induction: in the second half, mean attention from q to q - S + 1 (the token that followed
  the earlier copy).
Random tokens avoid any meaning the model could use instead; scores lie in [0, 1].

    scores = head_pattern_scores(model, seed=0)
    scores.to_frame()          # layer, head, score, value  (the atlas' head_scores format)
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.core.model import HookedModel
from interp.core.sites import Site

SCORES = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class HeadScoresResult:
    scores: dict[str, torch.Tensor]  # name -> (layer, head)
    n_sequences: int
    seq_len: int

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for name, m in self.scores.items():
            L, H = m.shape
            rows += [{"layer": layer, "head": h, "score": name, "value": float(m[layer, h])}
                     for layer in range(L) for h in range(H)]
        return pd.DataFrame(rows)

    def top(self, name: str, k: int = 5) -> list[tuple[int, int, float]]:
        m = self.scores[name]
        idx = m.flatten().argsort(descending=True)[:k]
        return [(int(i) // m.shape[1], int(i) % m.shape[1], float(m.flatten()[i])) for i in idx]


def repeated_random_tokens(model: HookedModel, n: int, seq_len: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    vocab = model.spec.d_vocab
    lo, hi = min(1000, vocab // 4), max(vocab - 1000, vocab // 2)  # skip special/rare ids
    half = torch.randint(lo, hi, (n, seq_len), generator=g)
    toks = torch.cat([half, half], 1)
    if model.prepend_bos and model.tokenizer.bos_token_id is not None:
        toks = torch.cat([torch.full((n, 1), model.tokenizer.bos_token_id), toks], 1)
    return toks


@torch.no_grad()
def head_pattern_scores(model: HookedModel, *, n: int = 8, seq_len: int = 20, seed: int = 0) -> HeadScoresResult:
    toks = repeated_random_tokens(model, n, seq_len, seed).to(model.device)
    off = toks.shape[1] - 2 * seq_len  # 1 with a BOS
    L = model.spec.n_layers
    _, cache = model.run_with_cache(toks, [Site("pattern", layer=layer) for layer in range(L)])
    prev, dup, ind = [], [], []
    S = seq_len
    q_all = torch.arange(off + 1, off + 2 * S)
    q_second = torch.arange(off + S + 1, off + 2 * S)  # from the second token of the second copy
    for layer in range(L):
        p = cache[Site("pattern", layer=layer)].float()  # (batch, head, q, k)
        prev.append(p[:, :, q_all, q_all - 1].mean((0, 2)))
        dup.append(p[:, :, q_second, q_second - S].mean((0, 2)))
        ind.append(p[:, :, q_second, q_second - S + 1].mean((0, 2)))
    return HeadScoresResult(
        {"previous_token": torch.stack(prev).cpu(), "duplicate_token": torch.stack(dup).cpu(),
         "induction": torch.stack(ind).cpu()}, n, seq_len)
