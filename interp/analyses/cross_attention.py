"""Cross-attention maps of a speech-to-text decoder, per (layer, head), and their aggregations.

Papi et al. 2025, "Cross-Attention is Half Explanation in Speech-to-Text Models" (arXiv
2509.18010), read the decoder's cross-attention CA[l, h] in R^{output tokens x encoder frames}
as an explanation of which input frames each output token used, and aggregate it by averaging
over a set of (layer, head): a single head, all heads of a layer, all layers, or the last layers.

Here the maps are recorded while teacher-forcing the model's own transcript (row t is the
query that predicts token t), through the nnsight backend. Choice where the paper has no
padding: Whisper reads 30 s windows, so a short clip is followed by silence frames; the maps
are cut to the encoder frames that hold audio (`n_frames`), without renormalising, and the
attention mass that falls inside that window is kept in `window_mass`.

    ca = cross_attention_maps(model, feats, transcript.token_ids, n_frames=120)
    ca.aggregate("all").shape            # (token, frame)
    ca.to_frame()                         # one row per (layer, head, token, frame)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.core.capabilities import AudioInput, require

if TYPE_CHECKING:
    from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel


def aggregation_sets(n_layers: int, n_heads: int, last_layers: int) -> dict[str, list[tuple[int, int]]]:
    """Named sets of (layer, head) to average: 'L{l}.H{h}' single heads, 'L{l}' layers, 'all',
    and 'last{k}' (the last k layers)."""
    if not 1 <= last_layers <= n_layers:
        raise ValueError(f"last_layers must be in 1..{n_layers}, got {last_layers}")
    sets: dict[str, list[tuple[int, int]]] = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            sets[f"L{layer}.H{head}"] = [(layer, head)]
    for layer in range(n_layers):
        sets[f"L{layer}"] = [(layer, h) for h in range(n_heads)]
    sets["all"] = [(l, h) for l in range(n_layers) for h in range(n_heads)]  # noqa: E741
    sets[f"last{last_layers}"] = [(l, h) for l in range(n_layers - last_layers, n_layers) for h in range(n_heads)]  # noqa: E741
    return sets


def aggregation_kind(name: str) -> tuple[str, int | None, int | None]:
    """('head' | 'layer' | 'all' | 'last', layer, head) of an aggregation name."""
    if name.startswith("L") and ".H" in name:
        layer, head = name[1:].split(".H")
        return "head", int(layer), int(head)
    if name.startswith("L"):
        return "layer", int(name[1:]), None
    if name.startswith("last"):
        return "last", None, None
    return "all", None, None


@dataclass(frozen=True)
class CrossAttentionResult:
    """Cross-attention of one utterance: `weights` (layer, head, token, frame) over the frames
    that hold audio; `window_mass` (layer, head, token) is the share of attention they get."""

    weights: Float[Tensor, "layer head token frame"]
    window_mass: Float[Tensor, "layer head token"]
    token_ids: list[int]
    tokens: list[str]
    utterance: str = ""
    axes: tuple[str, ...] = ("layer", "head", "token", "frame")

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def sets(self, last_layers: int = 2) -> dict[str, list[tuple[int, int]]]:
        return aggregation_sets(self.n_layers, self.n_heads, last_layers)

    def aggregate(self, name: str, last_layers: int = 2) -> Float[Tensor, "token frame"]:
        """The mean map over the (layer, head) set called `name` (see `aggregation_sets`)."""
        sets = self.sets(last_layers)
        if name not in sets:
            examples = ", ".join(["L0.H0", "L3", "all", f"last{last_layers}"])
            raise KeyError(f"unknown cross-attention aggregation {name!r}; e.g. {examples}")
        idx = sets[name]
        layers = torch.tensor([l for l, _ in idx])  # noqa: E741
        heads = torch.tensor([h for _, h in idx])
        return self.weights[layers, heads].mean(0)

    def aggregations(self, last_layers: int = 2) -> dict[str, Tensor]:
        return {name: self.aggregate(name, last_layers) for name in self.sets(last_layers)}

    def to_frame(self) -> pd.DataFrame:
        L, H, T, F = self.weights.shape
        w = self.weights.detach().cpu()
        idx = pd.MultiIndex.from_product([range(L), range(H), range(T), range(F)],
                                         names=["layer", "head", "token_index", "frame"])
        df = idx.to_frame(index=False)
        df["weight"] = w.reshape(-1).numpy()
        df["token"] = [self.tokens[t] for t in df["token_index"]]
        df["utterance"] = self.utterance
        return df

    def mass_frame(self) -> pd.DataFrame:
        """One row per (layer, head, token): the attention mass inside the audio window."""
        L, H, T = self.window_mass.shape
        idx = pd.MultiIndex.from_product([range(L), range(H), range(T)], names=["layer", "head", "token_index"])
        df = idx.to_frame(index=False)
        df["window_mass"] = self.window_mass.detach().cpu().reshape(-1).numpy()
        df["utterance"] = self.utterance
        return df


def cross_attention_maps(
    model: HookedSeq2SeqModel, features: Tensor, token_ids: Sequence[int], *,
    n_frames: int | None = None, utterance: str = "",
) -> CrossAttentionResult:
    """Cross-attention of every decoder layer and head while teacher-forcing `token_ids` on one
    utterance's features (1, n_mels, frames), cut to the first `n_frames` encoder frames."""
    require(model, AudioInput, "cross-attention maps")
    if features.ndim != 3 or features.shape[0] != 1:
        raise ValueError(f"features must hold one utterance, shape (1, mels, frames); got {tuple(features.shape)}")
    if not token_ids:
        raise ValueError("no output tokens to explain (the transcript is empty)")
    ca = model.cross_attention(features, list(token_ids))[:, 0].float().cpu()  # (layer, head, token, frame)
    total = ca.shape[-1]
    n = total if n_frames is None else n_frames
    if not 1 <= n <= total:
        raise ValueError(f"n_frames must be in 1..{total}, got {n_frames}")
    window = ca[..., :n]
    return CrossAttentionResult(window, window.sum(-1), list(map(int, token_ids)),
                                model.str_tokens(token_ids), utterance)


__all__ = ["CrossAttentionResult", "aggregation_kind", "aggregation_sets", "cross_attention_maps"]
