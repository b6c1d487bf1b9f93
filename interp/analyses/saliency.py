"""Input saliency of a speech-to-text model's output tokens: SPES-style occlusion and IG.

Both explain the model's own transcript under teacher forcing, one map per output token over
the input log-mel spectrogram, then reduced to the encoder frame rate so they can be compared
with cross-attention (Papi et al. 2025, arXiv 2509.18010, section on saliency maps).

(a) `spes_saliency` follows SPES (Fucci et al. 2024, arXiv 2411.01710): perturb regions of the
spectrogram and score each output token by the KL divergence KL(P_orig || P_perturbed) of its
next-token distribution. SPES segments the spectrogram with SLIC superpixels at several scales
and draws random masks; here the regions are a grid of time x frequency patches
(`patch_frames` x `patch_mels`), and two modes bound the cost:
  - ``occlusion`` (default): each patch is occluded alone; one forward per patch; relevance of a
    patch = its KL. Exact and deterministic.
  - ``random``: `n_masks` random masks, each drawn at one of `scales` (patch size multipliers)
    and occluding every patch of that grid with probability `mask_prob`; the relevance of a
    spectrogram cell is E[KL | cell occluded] - E[KL | cell kept] over the masks (SPES/RISE
    score the masks by the same KL; the difference of conditional means removes the offset that
    the other occluded regions add).
Occluding sets the log-mel values to the model's own silence level: Whisper clamps log10-mel to
(max - 8) and maps x -> (x + 4) / 4, so digital silence (the padding after a short clip) sits at
max(features) - 2; an occluded patch therefore looks like the padding the model already sees.

(b) `integrated_gradients_saliency`: captum's `IntegratedGradients` of each token's log-probability
with respect to the log-mel input, from the all-silence spectrogram; |attribution| is the map.

Reduction to the encoder frame rate (2 mel frames per encoder frame, 20 ms): an encoder frame's
relevance is the max (``pooling="max"``, best in the paper) or the mean (``"mean"``) over the
spectrogram cells it covers (its 2 mel frames x all mel bins), i.e. the frequency reduction and
the time pooling use the same operator. Only the frames that hold audio are explained.

    spes = spes_saliency(model, feats, token_ids, n_mel_frames=240)
    spes.maps.shape                   # (token, encoder frame)
    ig = integrated_gradients_saliency(model, feats, token_ids, n_mel_frames=240, steps=8)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

if TYPE_CHECKING:
    from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel

POOLINGS = ("max", "mean")
SPES_MODES = ("occlusion", "random")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SaliencyResult:
    """Per-token input relevance of one utterance: `maps` (token, frame) at the encoder frame
    rate, `fine` (token, mel, mel_frame) at spectrogram resolution (both over the audio)."""

    method: str
    maps: Float[Tensor, "token frame"]
    fine: Float[Tensor, "token mel mel_frame"]
    token_ids: list[int]
    tokens: list[str]
    pooling: str
    n_forwards: int
    utterance: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    axes: tuple[str, ...] = ("token", "frame")

    def to_frame(self) -> pd.DataFrame:
        T, F = self.maps.shape
        idx = pd.MultiIndex.from_product([range(T), range(F)], names=["token_index", "frame"])
        df = idx.to_frame(index=False)
        df["relevance"] = self.maps.detach().cpu().reshape(-1).numpy()
        df["token"] = [self.tokens[t] for t in df["token_index"]]
        df["method"], df["utterance"], df["pooling"] = self.method, self.utterance, self.pooling
        return df


def silence_level(features: Tensor) -> float:
    """The log-mel value of digital silence in these (normalised) Whisper features."""
    return float(features.max()) - 2.0


def pool_to_frames(fine: Tensor, ratio: int, pooling: str) -> Float[Tensor, "token frame"]:
    """(token, mel, mel_frame) -> (token, frame): max or mean over each frame's `ratio` mel
    frames and all mel bins (a last partial frame pools what it has)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    T, M, n = fine.shape
    frames = math.ceil(n / ratio)
    pad = frames * ratio - n
    if pooling == "max":
        x = torch.nn.functional.pad(fine, (0, pad), value=-math.inf)
        return x.reshape(T, M, frames, ratio).amax(dim=(1, 3))
    x = torch.nn.functional.pad(fine, (0, pad), value=0.0)
    counts = torch.full((frames,), float(ratio * M))
    if pad:
        counts[-1] = float((ratio - pad) * M)
    return x.reshape(T, M, frames, ratio).sum(dim=(1, 3)) / counts


def _gold_log_probs(
    model: HookedSeq2SeqModel, feats: Tensor, token_ids: Sequence[int],
) -> Float[Tensor, "batch token vocab"]:
    return torch.log_softmax(model.forced_logits(feats, token_ids).float(), dim=-1)


def _kl(p_log: Tensor, q_log: Tensor) -> Float[Tensor, "batch token"]:
    """KL(P || Q) per (batch, token) from log-probabilities; P (1, token, vocab)."""
    return (p_log.exp() * (p_log - q_log)).sum(-1).clamp_min(0.0)


def _grid(n_frames: int, n_mels: int, patch_frames: int, patch_mels: int) -> list[tuple[int, int, int, int]]:
    return [
        (t, min(t + patch_frames, n_frames), m, min(m + patch_mels, n_mels))
        for t in range(0, n_frames, patch_frames)
        for m in range(0, n_mels, patch_mels)
    ]


def _check_common(model: HookedSeq2SeqModel, features: Tensor, token_ids: Sequence[int], n_mel_frames: int,
                  pooling: str) -> None:
    if features.ndim != 3 or features.shape[0] != 1:
        raise ValueError(f"features must hold one utterance, shape (1, mels, frames); got {tuple(features.shape)}")
    if not token_ids:
        raise ValueError("no output tokens to explain (the transcript is empty)")
    if not 1 <= n_mel_frames <= features.shape[-1]:
        raise ValueError(f"n_mel_frames must be in 1..{features.shape[-1]}, got {n_mel_frames}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")


def spes_cost(n_mel_frames: int, n_mels: int, *, mode: str, patch_frames: int, patch_mels: int, n_masks: int) -> int:
    """Forwards `spes_saliency` needs (occlusion: one per patch; random: `n_masks`)."""
    if mode == "occlusion":
        return math.ceil(n_mel_frames / patch_frames) * math.ceil(n_mels / patch_mels)
    return n_masks


def _check_spes(mode: str, patch_frames: int, patch_mels: int, batch_size: int, n_masks: int, mask_prob: float,
                scales: Sequence[int]) -> None:
    if mode not in SPES_MODES:
        raise ValueError(f"unknown SPES mode {mode!r}; allowed: {', '.join(SPES_MODES)}")
    if patch_frames < 1 or patch_mels < 1 or batch_size < 1:
        raise ValueError("patch_frames, patch_mels and batch_size must be >= 1")
    if mode == "random" and (n_masks < 2 or not 0.0 < mask_prob < 1.0 or not scales or min(scales) < 1):
        raise ValueError("random masks need n_masks >= 2, 0 < mask_prob < 1 and scales of integers >= 1")


def _spes_masks(mode: str, n_mel_frames: int, n_mels: int, patch_frames: int, patch_mels: int, n_masks: int,
                mask_prob: float, scales: Sequence[int], seed: int) -> Bool[Tensor, "mask mel mel_frame"]:
    """Masks over the explained window: True = occluded. Occlusion: one per grid cell; random:
    `n_masks` of cells at a random scale, each occluded with `mask_prob`."""
    if mode == "occlusion":
        cells = _grid(n_mel_frames, n_mels, patch_frames, patch_mels)
        masks = torch.zeros(len(cells), n_mels, n_mel_frames, dtype=torch.bool)
        for i, (t0, t1, m0, m1) in enumerate(cells):
            masks[i, m0:m1, t0:t1] = True
        return masks
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n_masks, n_mels, n_mel_frames, dtype=torch.bool)
    scale_list = list(scales)
    for i in range(n_masks):
        s = scale_list[int(torch.randint(len(scale_list), (1,), generator=g))]
        for t0, t1, m0, m1 in _grid(n_mel_frames, n_mels, patch_frames * s, patch_mels * s):
            if float(torch.rand((), generator=g)) < mask_prob:
                masks[i, m0:m1, t0:t1] = True
    return masks


def _spes_fine(mode: str, kl: Tensor, masks: Tensor) -> Float[Tensor, "token mel mel_frame"]:
    """Per-cell saliency from the per-mask KL (mask, token)."""
    m = masks.float()  # (mask, mel, mel_frame)
    if mode == "occlusion":  # each cell is occluded by exactly one mask
        return torch.einsum("kt,kmf->tmf", kl, m)
    occ = m.sum(0).clamp_min(1.0)
    kept = (1 - m).sum(0).clamp_min(1.0)
    return torch.einsum("kt,kmf->tmf", kl, m) / occ - torch.einsum("kt,kmf->tmf", kl, 1 - m) / kept


@torch.no_grad()
def spes_saliency(
    model: HookedSeq2SeqModel,
    features: Tensor,
    token_ids: Sequence[int],
    *,
    n_mel_frames: int,
    mode: str = "occlusion",
    patch_frames: int = 10,
    patch_mels: int = 16,
    n_masks: int = 64,
    mask_prob: float = 0.5,
    scales: Sequence[int] = (1, 2),
    pooling: str = "max",
    batch_size: int = 8,
    seed: int = 0,
    utterance: str = "",
    progress: Progress | None = None,
) -> SaliencyResult:
    """SPES-style perturbation saliency of each output token (see the module docstring)."""
    _check_common(model, features, token_ids, n_mel_frames, pooling)
    _check_spes(mode, patch_frames, patch_mels, batch_size, n_masks, mask_prob, scales)
    feats = features.to(model.device, model.dtype)
    n_mels = feats.shape[1]
    silence = silence_level(feats)
    base = _gold_log_probs(model, feats, token_ids)  # (1, token, vocab)

    masks = _spes_masks(mode, n_mel_frames, n_mels, patch_frames, patch_mels, n_masks, mask_prob, scales, seed)

    kls = []
    for start in range(0, len(masks), batch_size):
        chunk = masks[start : start + batch_size]
        x = feats.repeat(len(chunk), 1, 1)
        window = x[:, :, :n_mel_frames]
        x[:, :, :n_mel_frames] = torch.where(chunk.to(x.device), torch.full_like(window, silence), window)
        kls.append(_kl(base, _gold_log_probs(model, x, token_ids)).cpu())
        if progress is not None:
            progress(min(start + batch_size, len(masks)), len(masks))
    kl = torch.cat(kls)  # (mask, token)

    fine = _spes_fine(mode, kl, masks)
    ratio = model.spec.mel_frames_per_audio_frame
    params = {"mode": mode, "patch_frames": patch_frames, "patch_mels": patch_mels, "batch_size": batch_size}
    if mode == "random":
        params.update(n_masks=n_masks, mask_prob=mask_prob, scales=list(scales), seed=seed)
    return SaliencyResult("spes", pool_to_frames(fine, ratio, pooling), fine, list(map(int, token_ids)),
                          model.str_tokens(token_ids), pooling, len(masks), utterance, params)


def integrated_gradients_saliency(
    model: HookedSeq2SeqModel,
    features: Tensor,
    token_ids: Sequence[int],
    *,
    n_mel_frames: int,
    steps: int = 8,
    method: str = "gausslegendre",
    pooling: str = "max",
    internal_batch_size: int | None = None,
    utterance: str = "",
    progress: Progress | None = None,
) -> SaliencyResult:
    """Integrated gradients (captum) of each token's log-probability w.r.t. the log-mel input,
    from the all-silence spectrogram; |attribution| inside the audio window is the map."""
    from captum.attr import IntegratedGradients

    _check_common(model, features, token_ids, n_mel_frames, pooling)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    feats = features.to(model.device, model.dtype)
    baseline = torch.full_like(feats, silence_level(feats))
    ids = list(map(int, token_ids))
    gold = torch.tensor(ids, device=model.device)

    def log_prob_of_each_token(x: Tensor) -> Tensor:  # (batch, token)
        lp = _gold_log_probs(model, x, ids)
        return lp.gather(-1, gold.expand(lp.shape[0], -1)[..., None])[..., 0]

    ig = IntegratedGradients(log_prob_of_each_token)
    fine = torch.zeros(len(ids), feats.shape[1], n_mel_frames)
    deltas = []
    with torch.enable_grad():
        for t in range(len(ids)):
            attr, delta = ig.attribute(feats, baselines=baseline, target=t, n_steps=steps, method=method,
                                       internal_batch_size=internal_batch_size, return_convergence_delta=True)
            fine[t] = attr[0, :, :n_mel_frames].detach().abs().float().cpu()
            deltas.append(float(delta.abs().max()))
            if progress is not None:
                progress(t + 1, len(ids))
    ratio = model.spec.mel_frames_per_audio_frame
    params = {"steps": steps, "method": method, "max_convergence_delta": max(deltas),
              "baseline": "silence"}
    return SaliencyResult("integrated_gradients", pool_to_frames(fine, ratio, pooling), fine, ids,
                          model.str_tokens(ids), pooling, len(ids) * steps, utterance, params)


__all__ = [
    "POOLINGS",
    "SPES_MODES",
    "SaliencyResult",
    "integrated_gradients_saliency",
    "pool_to_frames",
    "silence_level",
    "spes_cost",
    "spes_saliency",
]
