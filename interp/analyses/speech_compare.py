"""Does cross-attention explain a speech model's output? Correlation, capture and deletion.

Following Papi et al. 2025 ("Cross-Attention is Half Explanation in Speech-to-Text Models",
arXiv 2509.18010), three numbers compare a cross-attention map CA (token x frame) with an input
saliency map S of the same shape:
- `correlate`: Pearson's r between CA[t] and S[t] over the audio frames, per output token t,
  for every aggregation of heads/layers (single head, layer, all layers, last layers);
- capture share (also in `correlate`): the saliency held by CA's top frames relative to the
  most that any choice of as many frames can hold, sum_{f in top_k(CA_t)} S_t[f] /
  sum_{f in top_k(S_t)} S_t[f], with k = ceil(top_fraction x frames); 1 = CA points at exactly
  the most salient frames; `random_share` is what k random frames hold on average;
- `deletion_curves`: remove the top x% of the audio frames ranked by a map (5% steps), transcribe
  again, and measure the word error rate (WER) after each step; a steeper rise (larger area under
  the curve) means the map found the frames the output depends on. A random ranking is the
  baseline.

Choices where the paper is unspecific: a removed encoder frame has its 2 mel frames set to the
model's silence level (as SPES occludes); frames are ranked by the token-averaged map, each
token's map first scaled to sum 1 (every token counts equally); WER is measured against the
model's own unperturbed transcript (the prediction being explained) and also against the
reference text; the area under the curve uses WER clipped at 1 (a hallucinating decoder can
insert words without bound), by the trapezoid rule over the removed fraction, divided by the
largest fraction (so it lies in [0, 1]). WER is word-level Levenshtein distance over the
reference length after lower-casing and dropping punctuation (`wer`).

    corr = correlate(ca, spes, last_layers=2)
    corr.summary()                                   # mean r and capture share per aggregation
    dl = deletion_curves(model, feats, n_mel_frames=240, rankings={"ca": ..., "spes": ...},
                         transcript=t.text, reference=u.text)
    dl.auc()
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

if TYPE_CHECKING:
    from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel

from interp.analyses.cross_attention import CrossAttentionResult, aggregation_kind
from interp.analyses.saliency import SaliencyResult, silence_level

_WORD = re.compile(r"[a-z0-9']+")


# --- word error rate ------------------------------------------------------------------------


def normalise_text(text: str) -> list[str]:
    """Lower-cased words with punctuation dropped (apostrophes kept inside words)."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, start=1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0 = identical; may exceed 1)."""
    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return word_edits(ref, hyp) / len(ref)


# --- correlation and capture ----------------------------------------------------------------


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's r of each row of `a` with the same row of `b`; NaN where a row is constant."""
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    r = (a * b).sum(-1) / den
    return torch.where(den > 0, r, torch.full_like(r, math.nan)).float()


def capture_share(ca: Tensor, saliency: Tensor, top_fraction: float) -> tuple[Tensor, Tensor]:
    """(share, random share) per row: saliency in CA's top-k frames / in saliency's own top-k,
    and the same for k frames drawn at random (k x mean / top-k sum)."""
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if ca.shape != saliency.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(ca.shape)} and {tuple(saliency.shape)}")
    s = saliency.double().clamp_min(0.0)
    k = max(1, math.ceil(top_fraction * s.shape[-1]))
    best = s.topk(k, dim=-1).values.sum(-1)
    by_ca = s.gather(-1, ca.double().topk(k, dim=-1).indices).sum(-1)
    rand = k * s.mean(-1)
    nan = torch.full_like(best, math.nan)
    share = torch.where(best > 0, by_ca / best, nan)
    random_share = torch.where(best > 0, rand / best, nan)
    return share.float(), random_share.float()


@dataclass(frozen=True)
class _Table:
    """A result that is one table."""

    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()


@dataclass(frozen=True)
class CorrelationResult(_Table):
    """One row per (utterance, saliency method, CA aggregation, output token)."""

    def summary(self) -> pd.DataFrame:
        """Mean Pearson r (and r^2, capture shares) per (saliency, aggregation) over all tokens."""
        g = self.frame.groupby(["saliency", "aggregation", "kind"], sort=False)
        out = g.agg(
            layer=("layer", "first"), head=("head", "first"),
            pearson=("pearson", "mean"), pearson_std=("pearson", "std"),
            capture_share=("capture_share", "mean"), random_share=("random_share", "mean"),
            n_tokens=("pearson", "count"),
        ).reset_index()
        out["r_squared"] = out["pearson"] ** 2
        return out

    @staticmethod
    def concat(results: Sequence[CorrelationResult]) -> CorrelationResult:
        return CorrelationResult(pd.concat([r.frame for r in results], ignore_index=True))


def correlate(
    ca: CrossAttentionResult, saliency: SaliencyResult, *, last_layers: int = 2, top_fraction: float = 0.2
) -> CorrelationResult:
    """Pearson r and capture share of every CA aggregation against one saliency map."""
    if ca.token_ids != saliency.token_ids:
        raise ValueError("cross-attention and saliency explain different token sequences")
    if ca.weights.shape[-1] != saliency.maps.shape[-1]:
        raise ValueError(
            f"cross-attention covers {ca.weights.shape[-1]} frames, saliency {saliency.maps.shape[-1]}; "
            "compute both over the same audio window"
        )
    rows = []
    s = saliency.maps.float()
    for name, agg in ca.aggregations(last_layers).items():
        kind, layer, head = aggregation_kind(name)
        r = pearson_rows(agg, s)
        share, rand = capture_share(agg, s, top_fraction)
        for t in range(len(ca.token_ids)):
            rows.append({
                "utterance": ca.utterance, "saliency": saliency.method, "aggregation": name, "kind": kind,
                "layer": layer, "head": head, "token_index": t, "token": ca.tokens[t],
                "pearson": float(r[t]), "capture_share": float(share[t]), "random_share": float(rand[t]),
            })
    df = pd.DataFrame(rows)
    df["layer"] = df["layer"].astype("Int64")
    df["head"] = df["head"].astype("Int64")
    return CorrelationResult(df)


# --- deletion -------------------------------------------------------------------------------


def utterance_scores(maps: Tensor) -> Tensor:
    """(token, frame) -> (frame,): mean over tokens of each token's map scaled to sum 1."""
    m = maps.double().clamp_min(0.0)
    tot = m.sum(-1, keepdim=True)
    m = torch.where(tot > 0, m / tot.clamp_min(1e-300), torch.full_like(m, 1.0 / m.shape[-1]))
    return m.mean(0).float()


def ranking(scores: Tensor) -> Tensor:
    """Frame indices from most to least relevant (ties keep frame order)."""
    return torch.sort(-scores.double(), stable=True).indices


def fractions_grid(step: float = 0.05, max_fraction: float = 1.0) -> list[float]:
    if not 0.0 < step <= max_fraction <= 1.0:
        raise ValueError(f"need 0 < step <= max_fraction <= 1; got step={step}, max_fraction={max_fraction}")
    n = int(round(max_fraction / step))
    return [round(i * step, 6) for i in range(n + 1)]


@dataclass(frozen=True)
class DeletionResult(_Table):
    """One row per (utterance, map, fraction): frames removed, new transcript and its WER."""

    def curves(self) -> pd.DataFrame:
        """Mean WER per (map, fraction) over utterances (clipped at 1 and raw)."""
        f = self.frame.assign(wer_transcript_clipped=self.frame.wer_transcript.clip(upper=1.0),
                              wer_reference_clipped=self.frame.wer_reference.clip(upper=1.0))
        return f.groupby(["map", "fraction"], sort=False).agg(
            wer_transcript=("wer_transcript_clipped", "mean"), wer_reference=("wer_reference_clipped", "mean"),
            wer_transcript_raw=("wer_transcript", "mean"), n_utterances=("utterance", "nunique"),
        ).reset_index()

    def auc(self) -> pd.DataFrame:
        """Area under the mean curve (WER clipped at 1) per map, normalised by the fraction range."""
        rows = []
        for name, c in self.curves().groupby("map", sort=False):
            c = c.sort_values("fraction")
            x = c.fraction.to_numpy()
            span = x[-1] - x[0] if len(x) > 1 else 1.0
            rows.append({
                "map": name,
                "auc_wer_transcript": _trapezoid(c.wer_transcript.to_numpy(), x) / span,
                "auc_wer_reference": _trapezoid(c.wer_reference.to_numpy(), x) / span,
                "n_utterances": int(c.n_utterances.min()),
            })
        return pd.DataFrame(rows).sort_values("auc_wer_transcript", ascending=False).reset_index(drop=True)

    @staticmethod
    def concat(results: Sequence[DeletionResult]) -> DeletionResult:
        return DeletionResult(pd.concat([r.frame for r in results], ignore_index=True))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum()) if len(x) > 1 else float(y[0])


def delete_frames(features: Tensor, frames: Tensor, ratio: int, n_mel_frames: int, silence: float) -> Tensor:
    """A copy of (1, mel, T) features with the mel frames of encoder `frames` set to silence."""
    x = features.clone()
    for f in frames.tolist():
        x[:, :, f * ratio : min((f + 1) * ratio, n_mel_frames)] = silence
    return x


@torch.no_grad()
def deletion_curves(
    model: HookedSeq2SeqModel,
    features: Tensor,
    *,
    n_mel_frames: int,
    rankings: Mapping[str, Tensor],
    transcript: str,
    reference: str,
    fractions: Sequence[float] | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    utterance: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> DeletionResult:
    """WER after removing the top x% of audio frames by each ranking (most relevant first).

    `rankings` maps a name ("ca:all", "spes", "random", ...) to frame indices, most relevant
    first, over the same audio window; fraction 0 reuses `transcript` (nothing removed)."""
    fractions = list(fractions) if fractions is not None else fractions_grid()
    if not rankings:
        raise ValueError("no rankings to test")
    n_frames = {len(r) for r in rankings.values()}
    if len(n_frames) != 1:
        raise ValueError(f"rankings cover different numbers of frames: {sorted(n_frames)}")
    (n,) = n_frames
    ratio = model.spec.mel_frames_per_audio_frame
    silence = silence_level(features)
    jobs = []  # (map, fraction, k, features)
    for name, order in rankings.items():
        if sorted(order.tolist()) != list(range(n)):
            raise ValueError(f"ranking {name!r} is not a permutation of the {n} frames")
        for frac in fractions:
            k = int(round(frac * n))
            jobs.append((name, frac, k))
    todo = [j for j in jobs if j[2] > 0]
    hyps: dict[tuple[str, float], str] = {(name, frac): transcript for name, frac, k in jobs if k == 0}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        x = torch.cat([delete_frames(features, rankings[name][:k], ratio, n_mel_frames, silence)
                       for name, _, k in chunk])
        for (name, frac, _), t in zip(chunk, model.transcribe(x, max_new_tokens=max_new_tokens), strict=True):
            hyps[(name, frac)] = t.text
        if progress is not None:
            progress(min(start + batch_size, len(todo)), len(todo))
    rows = [{
        "utterance": utterance, "map": name, "fraction": frac, "n_removed": k, "n_frames": n,
        "hypothesis": hyps[(name, frac)], "wer_transcript": wer(transcript, hyps[(name, frac)]),
        "wer_reference": wer(reference, hyps[(name, frac)]),
    } for name, frac, k in jobs]
    return DeletionResult(pd.DataFrame(rows))


__all__ = [
    "CorrelationResult",
    "DeletionResult",
    "capture_share",
    "correlate",
    "delete_frames",
    "deletion_curves",
    "fractions_grid",
    "normalise_text",
    "pearson_rows",
    "ranking",
    "utterance_scores",
    "wer",
    "word_edits",
]
