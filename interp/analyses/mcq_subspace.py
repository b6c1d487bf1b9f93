"""Low-rank subspaces of an MCQ letter head's query and key (centred SVD over a dataset)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.mcq_letters import label_positions
from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Head
from interp.data.pairs import PairDataset, TokenizedPairs

KEY_POSITIONS = ("labels", "all")

@dataclass(frozen=True)
class Subspace:
    """A centred SVD basis of activations x (N, d): x ~ mean + sum_i c_i basis[i]."""

    mean: torch.Tensor  # (d,)
    basis: torch.Tensor  # (d, d) orthonormal rows, by decreasing singular value
    singular_values: torch.Tensor  # (d,) zero-padded when N < d
    n_samples: int

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    def project(self, x: torch.Tensor, rank: int) -> torch.Tensor:
        """mean + top-`rank` projection of (x - mean); the identity at full rank (no arithmetic,
        so a full-rank compression leaves the model bit-for-bit unchanged)."""
        if rank >= self.dim:
            return x
        mu = self.mean.to(x.dtype)
        if rank <= 0:
            return mu.expand_as(x).clone()
        V = self.basis[:rank].to(x.dtype)  # (r, d)
        return mu + ((x - mu) @ V.T) @ V

    def explained_variance(self, rank: int) -> float:
        s2 = self.singular_values.pow(2)
        total = float(s2.sum())
        return 1.0 if rank >= self.dim or total == 0 else float(s2[: max(rank, 0)].sum()) / total


def fit_subspace(x: torch.Tensor) -> Subspace:
    """Centred SVD of (N, d) activations."""
    x = x.double()
    mu = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mu, full_matrices=True)
    d = x.shape[1]
    sv = torch.zeros(d, dtype=torch.float64)
    sv[: s.shape[0]] = s
    return Subspace(mu.float(), vh.float(), sv.float(), x.shape[0])


@dataclass(frozen=True)
class HeadSubspaces:
    """The query (last position) and key (label tokens or all positions) subspaces of one head."""

    layer: int
    head: int
    kv_head: int
    q: Subspace
    k: Subspace
    key_positions: str

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for comp, sub in (("q", self.q), ("k", self.k)):
            for r in range(sub.dim + 1):
                rows.append({"layer": self.layer, "head": self.head, "component": comp, "rank": r,
                             "explained_variance": sub.explained_variance(r), "n_samples": sub.n_samples})
        return pd.DataFrame(rows)


def _kv_head(model: HookedModel, head: int) -> int:
    return head // (model.spec.n_heads // model.spec.n_kv_heads)


def _check_heads(model: HookedModel, heads: Sequence[Head]) -> None:
    L, H = model.spec.n_layers, model.spec.n_heads
    bad = [f"L{layer}H{h}" for layer, h in heads if not (0 <= layer < L and 0 <= h < H)]
    if bad:
        raise InterpError(f"heads {', '.join(bad)} do not exist (layers 0..{L - 1}, heads 0..{H - 1})")


@torch.no_grad()
def fit_head_subspaces(
    model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset, heads: Sequence[Head],
    *, key_positions: str = "labels",
) -> dict[Head, HeadSubspaces]:
    """SVD of each head's pre-rotation query at the last position and of its KV group's
    pre-rotation key at the four label tokens (``"labels"``) or every position (``"all"``)."""
    if key_positions not in KEY_POSITIONS:
        raise InterpError(f"unknown key_positions {key_positions!r}; allowed: {', '.join(KEY_POSITIONS)}")
    _check_heads(model, heads)
    qs: dict[Head, list[torch.Tensor]] = {h: [] for h in heads}
    ks: dict[Head, list[torch.Tensor]] = {h: [] for h in heads}
    for pb in pairs.by_length().batches:
        sites = []
        for layer, h in heads:
            sites += [Site("q", layer, head=h, position=-1), Site("k", layer, head=_kv_head(model, h))]
        _, cache = model.run_with_cache(pb.clean.to(model.device), sorted(set(sites)))
        pos = label_positions(model.tokenizer, dataset, pb).to(model.device) if key_positions == "labels" else None
        for layer, h in heads:
            qs[(layer, h)].append(cache[Site("q", layer, head=h, position=-1)].float().cpu())
            k = cache[Site("k", layer, head=_kv_head(model, h))].float()  # (batch, pos, d)
            if pos is not None:
                k = k.gather(1, pos.unsqueeze(-1).expand(-1, -1, k.shape[-1]))  # (batch, 4, d)
            ks[(layer, h)].append(k.reshape(-1, k.shape[-1]).cpu())
    return {
        (layer, h): HeadSubspaces(layer, h, _kv_head(model, h), fit_subspace(torch.cat(qs[(layer, h)])),
                                  fit_subspace(torch.cat(ks[(layer, h)])), key_positions)
        for layer, h in heads
    }
