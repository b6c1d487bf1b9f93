"""Metrics on last-position logits, registered by name so experiment YAML can refer to them.

A metric sees logits for a set of columns (the whole vocabulary only when `full_vocab`), and
the column index of each prompt's answer and distractor; it returns one value per prompt.
Sweeps use `columns_for` so metrics that need two logits never pay for the whole unembedding.

    >>> m = get_metric("logit_diff")
    >>> cols, a, d = columns_for(m, answer_ids, distractor_ids)
    >>> m.fn(model.unembed(final_resid[:, -1], cols), a, d)   # (batch,)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.core.errors import InterpError

MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    full_vocab: bool
    description: str


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, full_vocab: bool, description: str):
    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = Metric(name, fn, full_vocab, description)
        return fn

    return deco


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise InterpError(f"unknown metric {name!r}; allowed: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def columns_for(metric: Metric, answer_ids: torch.Tensor, distractor_ids: torch.Tensor):
    """(columns to unembed or None for all, answer column index, distractor column index)."""
    if metric.full_vocab:
        return None, answer_ids, distractor_ids
    n = answer_ids.shape[0]
    cols = torch.cat([answer_ids, distractor_ids])
    ar = torch.arange(n, device=answer_ids.device)
    return cols, ar, ar + n


def _rows(logits: torch.Tensor) -> torch.Tensor:
    return torch.arange(logits.shape[0], device=logits.device)


@register_metric("logit_diff", full_vocab=False, description="logit(answer) - logit(distractor)")
def logit_diff(logits: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    r = _rows(logits)
    return logits[r, a] - logits[r, d]


@register_metric("prob", full_vocab=True, description="softmax probability of the answer")
def answer_prob(logits: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(-1)[_rows(logits), a]


@register_metric("prob_diff", full_vocab=True, description="p(answer) - p(distractor)")
def prob_diff(logits: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    p = logits.float().softmax(-1)
    r = _rows(logits)
    return p[r, a] - p[r, d]


def normalise(patched, clean: float, corrupt: float):
    """(m_patched - m_corrupt) / (m_clean - m_corrupt): 1 = clean behaviour, 0 = corrupt."""
    denom = clean - corrupt
    if abs(denom) < 1e-9:
        raise InterpError(
            "clean and corrupt metrics are equal, so the normalised score is undefined; "
            "check that the corruption changes the answer"
        )
    return (patched - corrupt) / denom
