"""Named result dataclasses. Every analysis returns one of these, never a bare tuple.

Each has axis names for its main tensor and a tidy `.to_frame()` (one row per cell), which is
what the run store writes as parquet and what the viz and the app read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.core.metrics import normalise


@dataclass(frozen=True)
class PatchingResult:
    """Activation patching: the mean metric after patching each site.

    `values` has one axis per name in `axes` (e.g. ("layer", "head") or
    ("component", "layer", "position")); `labels` gives the tick values of axes that are not
    plain integer ranges (components, token strings)."""

    analysis: str
    direction: str  # "denoising" (clean -> corrupt run) | "noising" (corrupt -> clean run)
    metric: str
    axes: tuple[str, ...]
    values: torch.Tensor
    clean_metric: float
    corrupt_metric: float
    n_prompts: int
    labels: dict[str, list] = field(default_factory=dict)
    token_labels: list[str] | None = None  # per position, when positions are resolved

    @property
    def normalised(self) -> torch.Tensor:
        return normalise(self.values, self.clean_metric, self.corrupt_metric)

    def to_frame(self) -> pd.DataFrame:
        vals = self.values.detach().cpu()
        norm = self.normalised.detach().cpu()
        ticks = [self.labels.get(a, list(range(n))) for a, n in zip(self.axes, vals.shape, strict=True)]
        rows = []
        for idx in itertools.product(*(range(n) for n in vals.shape)):
            row = {a: ticks[i][j] for i, (a, j) in enumerate(zip(self.axes, idx, strict=True))}
            if self.token_labels is not None and "position" in self.axes:
                row["token"] = self.token_labels[idx[self.axes.index("position")]]
            row["metric_value"] = float(vals[idx])
            row["normalised"] = float(norm[idx])
            rows.append(row)
        df = pd.DataFrame(rows)
        df["analysis"], df["direction"], df["metric"] = self.analysis, self.direction, self.metric
        return df

    def top(self, k: int = 10, by: str = "normalised") -> pd.DataFrame:
        """Sites with the largest effect: |normalised - baseline| (0 for denoising, 1 for noising)."""
        df = self.to_frame()
        base = 0.0 if self.direction == "denoising" else 1.0
        score = (df[by] - base).abs() if by == "normalised" else (df[by] - df[by].median()).abs()
        return df.loc[score.sort_values(ascending=False).index[:k]].reset_index(drop=True)


@dataclass(frozen=True)
class DLAResult:
    """Direct logit attribution at the last position, per prompt.

    `contributions` is (prompt, component) with `labels` naming the components ("embed",
    "L3H5", "L3.attn_bias", "L3.attn_remainder", "MLP3", "final_norm_bias", "unembed_bias",
    and "final_softcap" on softcapped models); the rows sum to
    `logit_diff` up to the float error reported in `max_abs_error`."""

    labels: list[str]
    kinds: list[str]
    layers: list[int | None]
    heads: list[int | None]
    contributions: torch.Tensor  # (prompt, component)
    logit_diff: torch.Tensor  # (prompt,) the model's actual logit difference
    max_abs_error: float
    # What the decomposition assumes where the model is not linear in the parts (frozen norm
    # scales, a softcap as its own term), and the largest attention remainder relative to the
    # largest head term (0 = exact).
    approximations: tuple[str, ...] = ()
    max_remainder: float = 0.0

    @property
    def verdict(self) -> str:
        """"exact" when only the standard frozen final-norm scale is assumed, else "approximate"."""
        return "exact" if len(self.approximations) <= 1 else "approximate"

    def to_frame(self) -> pd.DataFrame:
        c = self.contributions.detach().cpu()
        return pd.DataFrame(
            {
                "label": self.labels,
                "kind": self.kinds,
                "layer": pd.array(self.layers, dtype="Int64"),
                "head": pd.array(self.heads, dtype="Int64"),
                "contribution": c.mean(0).numpy(),
                "std": c.std(0).numpy() if c.shape[0] > 1 else 0.0,
            }
        )

    def per_prompt_frame(self) -> pd.DataFrame:
        c = self.contributions.detach().cpu()
        df = pd.DataFrame(c.numpy(), columns=self.labels)
        df.index.name = "prompt"
        return df.reset_index().melt(id_vars="prompt", var_name="label", value_name="contribution")

    def head_matrix(self, n_layers: int, n_heads: int) -> torch.Tensor:
        out = torch.zeros(n_layers, n_heads)
        mean = self.contributions.mean(0)
        for i, (k, layer, head) in enumerate(zip(self.kinds, self.layers, self.heads, strict=True)):
            if k == "head":
                out[layer, head] = mean[i]
        return out


@dataclass(frozen=True)
class AccuracyResult:
    """How well the model does the task: per prompt, on clean and corrupt inputs."""

    clean_logit_diff: torch.Tensor  # (prompt,)
    corrupt_logit_diff: torch.Tensor
    clean_top1_is_answer: torch.Tensor  # bool (prompt,)
    clean_answer_prob: torch.Tensor
    top1_tokens: list[str]
    prompts: list[str]

    @property
    def accuracy(self) -> float:
        return float(self.clean_top1_is_answer.float().mean())

    @property
    def logit_diff_positive_rate(self) -> float:
        return float((self.clean_logit_diff > 0).float().mean())

    def summary(self) -> dict[str, float]:
        return {
            "n_prompts": len(self.prompts),
            "top1_accuracy": self.accuracy,
            "logit_diff_positive_rate": self.logit_diff_positive_rate,
            "mean_clean_logit_diff": float(self.clean_logit_diff.mean()),
            "mean_corrupt_logit_diff": float(self.corrupt_logit_diff.mean()),
            "mean_answer_prob": float(self.clean_answer_prob.mean()),
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "prompt": self.prompts,
                "clean_logit_diff": self.clean_logit_diff.cpu().numpy(),
                "corrupt_logit_diff": self.corrupt_logit_diff.cpu().numpy(),
                "top1_is_answer": self.clean_top1_is_answer.cpu().numpy(),
                "answer_prob": self.clean_answer_prob.cpu().numpy(),
                "top1_token": self.top1_tokens,
            }
        )
