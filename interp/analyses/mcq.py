"""MCQ letter heads (Lieberum et al. 2023): accuracy, head patching at the answer position, and
low-rank compression of a head's query and key.

- `mcq_accuracy`: top-1 among the four option letters, the letter logit difference
  (correct minus the mean of the other three) and the probability mass on the letters.
- `patch_heads_last_position`: each head's output patched at the last position only (clean
  into corrupt by default). Letter heads act at the answer position, and the sweep resumes the
  forward there, so it costs a few forwards instead of one per head (`patch_heads` patches all
  positions; it is the same number when only the last position matters).
- `fit_head_subspaces` + `compress_qk`: for a head, the SVD of its query at the last position
  and of its KV group's key at the label tokens (or all positions) over a dataset; then the
  query and/or key is replaced by ``mean + top-r projection of (x - mean)`` and the letter
  metric is measured at each rank r, as a share of the unablated model's.

Queries and keys are taken *before* the rotary embedding (sites ``q`` and ``k``): RoPE rotates
each position by a different angle, so rotated vectors at different positions have no common
basis for one SVD; the pre-rotation vectors are the content the model writes, and the model
rotates the compressed vector itself. GQA: a key is shared by `n_heads / n_kv_heads` query
heads, so the compressed key is seen only by the studied head: its row of attention scores at
the last position is recomputed from its (rotated) query and the compressed keys rotated by the
model (one extra block to rotate them), and the other heads of the group keep the original keys.

    pairs = tokenize_pairs(ds, model.tokenizer)
    acc = mcq_accuracy(model, pairs, ds)
    subs = fit_head_subspaces(model, pairs, ds, [(16, 0)])
    res = compress_qk(model, {"normal": (ds, pairs)}, subs, ranks=[0, 1, 2, 4, 64])
    res.to_frame()      # head, variant, rank, condition, letter_logit_diff, accuracy, share_...
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.mcq_compress import (
    VARIANTS,
    QKCompressionResult,
    _Batch,
    _evaluate,
    compress_qk,
    compression_hooks,
    prepare_batches,
)
from interp.analyses.mcq_letters import (
    _letter_metrics,
    _token_id,
    label_positions,
    letter_ids,
    letter_targets,
)
from interp.analyses.mcq_subspace import (
    KEY_POSITIONS,
    HeadSubspaces,
    Subspace,
    fit_head_subspaces,
    fit_subspace,
)
from interp.analyses.patching import patch_heads
from interp.analyses.results import PatchingResult
from interp.analyses.sweep import ProgressFn
from interp.core.model import HookedModel
from interp.data.pairs import PairDataset, TokenizedPairs

__all__ = [
    "KEY_POSITIONS", "VARIANTS", "HeadSubspaces", "MCQAccuracyResult", "QKCompressionResult", "Subspace",
    "_Batch", "_evaluate", "_letter_metrics", "_token_id", "compress_qk", "compression_hooks",
    "fit_head_subspaces", "fit_subspace", "label_positions", "letter_ids", "letter_targets", "mcq_accuracy",
    "patch_heads_last_position", "prepare_batches",
]


# ----------------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class MCQAccuracyResult:
    """Per prompt: the four letter logits, which is correct, and what the model predicts."""

    letter_logits: torch.Tensor  # (prompt, option)
    correct: torch.Tensor  # (prompt,)
    letter_mass: torch.Tensor  # (prompt,) softmax probability on the four letters together
    top1_is_letter: torch.Tensor  # (prompt,) bool: the top-1 token over the vocabulary is a letter
    top1_tokens: list[str]
    categories: list[str]
    prompts: list[str]
    labels: list[list[str]]
    axes: tuple[str, ...] = ("prompt", "option")

    @property
    def letter_logit_diff(self) -> torch.Tensor:
        return _letter_metrics(self.letter_logits, self.correct)[0]

    @property
    def is_correct(self) -> torch.Tensor:
        return _letter_metrics(self.letter_logits, self.correct)[1].bool()

    @property
    def accuracy(self) -> float:
        return float(self.is_correct.float().mean())

    def summary(self) -> dict[str, float]:
        pred = self.letter_logits.argmax(-1)
        n = max(len(self.prompts), 1)
        return {
            "n_prompts": len(self.prompts),
            "accuracy": self.accuracy,
            "chance": 1 / self.letter_logits.shape[1],
            "mean_letter_logit_diff": float(self.letter_logit_diff.mean()),
            "mean_letter_mass": float(self.letter_mass.mean()),
            "top1_is_a_letter": float(self.top1_is_letter.float().mean()),
            # Position bias: how often the most frequently predicted option slot is predicted.
            "most_predicted_option_share": float(pred.bincount(minlength=self.letter_logits.shape[1]).max()) / n,
        }

    def to_frame(self) -> pd.DataFrame:
        ld, ok = _letter_metrics(self.letter_logits, self.correct)
        pred = self.letter_logits.argmax(-1)
        return pd.DataFrame({
            "prompt": range(len(self.prompts)),
            "category": self.categories,
            "correct_label": [lab[c] for lab, c in zip(self.labels, self.correct.tolist(), strict=True)],
            "predicted_label": [lab[p] for lab, p in zip(self.labels, pred.tolist(), strict=True)],
            "is_correct": ok.bool().numpy(),
            "letter_logit_diff": ld.numpy(),
            "letter_mass": self.letter_mass.numpy(),
            "top1_token": self.top1_tokens,
            "top1_is_letter": self.top1_is_letter.numpy(),
            "text": self.prompts,
        })


@torch.no_grad()
def mcq_accuracy(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset) -> MCQAccuracyResult:
    ids, correct = letter_ids(model.tokenizer, dataset)
    n = len(dataset)
    logits4, mass = torch.zeros(n, ids.shape[1]), torch.zeros(n)
    is_letter = torch.zeros(n, dtype=torch.bool)
    top1 = [""] * n
    for pb in pairs.by_length().batches:
        last = model.forward(pb.clean.to(model.device))[:, -1].float().cpu()
        rows = ids[pb.indices]
        logits4[pb.indices] = last.gather(1, rows)
        mass[pb.indices] = last.softmax(-1).gather(1, rows).sum(-1)
        best = last.argmax(-1)
        is_letter[pb.indices] = (rows == best.unsqueeze(1)).any(1)
        for i, t in zip(pb.indices, best.tolist(), strict=True):
            top1[i] = model.tokenizer.decode([t])
    return MCQAccuracyResult(
        logits4, correct, mass, is_letter, top1, [str(p.meta.get("category", "")) for p in dataset],
        [p.clean for p in dataset], [list(p.meta["labels"]) for p in dataset],
    )


# ----------------------------------------------------------------- head patching (last position)


def patch_heads_last_position(model: HookedModel, pairs: TokenizedPairs, *, direction: str = "denoising",
                              metric: str = "logit_diff", batch_size: int = 64,
                              progress: ProgressFn | None = None) -> PatchingResult:
    """Each head's output `z` patched at the last position only; axes ("layer", "head")."""
    return patch_heads(model, pairs, direction=direction, metric=metric, batch_size=batch_size,
                       progress=progress, position=-1)
