"""Metrics on last-position logits, registered by name so experiment YAML can refer to them.

A metric takes one `MetricRecord`: the last-position logits for a set of columns (the whole
vocabulary only when `full_vocab`) and, for each prompt, the column of every token id it reads
(answer, distractor, and named extras such as the four MCQ letters or the memory/context
answers). It returns one value per prompt. A `Readout` decides which columns to unembed, so
metrics that need two logits never pay for the whole unembedding:

    >>> r = readout(get_metric("logit_diff"), Targets(answer_ids, distractor_ids))
    >>> r.score(model.unembed(final_resid[:, -1], r.columns))      # (batch,)

Names are unique: registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.core.errors import InterpError
from interp.core.types import (
    Columns,
    LastLogits,
    OptionLogits,
    PerPrompt,
    SelectedLogits,
    Tensor,
    TokenIds,
    TokenIdTable,
)

TARGET_KEYS = ("answer", "distractor")  # the targets every prompt pair has; the rest are extras


@dataclass(frozen=True)
class MetricRecord:
    """What a metric sees: logits (batch, column) and, per prompt, the columns it reads.
    `cols[key]` is (batch,) for one id per prompt or (batch, k) for several (e.g. letters)."""

    logits: SelectedLogits
    cols: Mapping[str, TokenIdTable]

    @property
    def rows(self) -> TokenIds:
        return torch.arange(self.logits.shape[0], device=self.logits.device)

    def at(self, key: str) -> Tensor:
        """Each prompt's logit(s) at target `key`: (batch,) or (batch, k)."""
        idx = self.cols[key]
        out: Tensor = self.logits[self.rows, idx] if idx.ndim == 1 else self.logits.gather(1, idx)
        return out

    @property
    def answer(self) -> TokenIds:
        return self.cols["answer"]

    @property
    def distractor(self) -> TokenIds:
        return self.cols["distractor"]


MetricFn = Callable[[MetricRecord], PerPrompt]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    full_vocab: bool
    description: str
    reads: tuple[str, ...] = TARGET_KEYS  # the targets the metric needs

    def __call__(self, record: MetricRecord) -> PerPrompt:
        return self.fn(record)


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str, *, full_vocab: bool, description: str, reads: tuple[str, ...] = TARGET_KEYS
) -> Callable[[MetricFn], MetricFn]:
    if name in METRICS:
        raise InterpError(f"metric {name!r} is already registered ({METRICS[name].description}); pick another name")

    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = Metric(name, fn, full_vocab, description, reads)
        return fn

    return deco


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise InterpError(f"unknown metric {name!r}; allowed: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def metrics_reading(provided: tuple[str, ...] = TARGET_KEYS) -> list[str]:
    """Names of the metrics that need only the targets in `provided` (default: what every prompt
    pair has, answer and distractor): the metrics a pair-based analysis can compute."""
    return sorted(name for name, m in METRICS.items() if set(m.reads) <= set(provided))


def as_metric(metric: str | Metric) -> Metric:
    return get_metric(metric) if isinstance(metric, str) else metric


# ----------------------------------------------------------------------------- readout


@dataclass(frozen=True)
class Targets:
    """Token ids each prompt's metric may read: answer, distractor and named extras."""

    answer: TokenIds | None
    distractor: TokenIds | None = None
    extra: Mapping[str, TokenIdTable] = field(default_factory=dict)

    def get(self, key: str) -> Tensor | None:
        return getattr(self, key) if key in TARGET_KEYS else self.extra.get(key)

    def to(self, device: torch.device | str) -> Targets:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Targets(mv(self.answer), mv(self.distractor), {k: v.to(device) for k, v in self.extra.items()})


@dataclass(frozen=True)
class Readout:
    """Which logit columns a metric needs (None: the whole vocabulary) and where each prompt's
    targets sit among them; `score` applies the metric to `copies` stacked copies of the batch."""

    metric: Metric
    columns: Columns | None
    cols: Mapping[str, TokenIdTable]

    def record(self, logits: SelectedLogits, copies: int = 1) -> MetricRecord:
        reps = {k: v.repeat(copies, *([1] * (v.ndim - 1))) for k, v in self.cols.items()}
        return MetricRecord(logits, reps)

    def select(self, logits: LastLogits) -> SelectedLogits:
        """Restrict full-vocabulary logits to this readout's columns."""
        return logits if self.columns is None else logits[:, self.columns]

    def score(self, logits: SelectedLogits, copies: int = 1) -> PerPrompt:
        """The metric on logits already restricted to `columns` (in fp32 whatever the model's dtype:
        a bf16 logit difference would keep 8 bits)."""
        return self.metric.fn(self.record(logits.float(), copies))

    def score_vocab(self, logits: LastLogits) -> PerPrompt:
        """The metric on full-vocabulary logits."""
        return self.score(self.select(logits))


def readout(metric: Metric, targets: Targets) -> Readout:
    """The columns `metric` reads for `targets`. One id per prompt per target (e.g. answer and
    distractor): the ids concatenated target after target; a table of ids per prompt (e.g. the
    four MCQ letters): the distinct ids, each prompt's targets indexing into them."""
    ids = {}
    for key in metric.reads:
        t = targets.get(key)
        if t is None:
            raise InterpError(f"metric {metric.name!r} reads {key!r}, which this analysis does not provide "
                              f"(it provides {', '.join(_provided(targets))})")
        ids[key] = t
    if metric.full_vocab:
        return Readout(metric, None, ids)
    if all(t.ndim == 1 for t in ids.values()):
        n = next(iter(ids.values())).shape[0]
        ar = torch.arange(n, device=next(iter(ids.values())).device)
        return Readout(metric, torch.cat(list(ids.values())), {k: ar + i * n for i, k in enumerate(ids)})
    n = next(iter(ids.values())).shape[0]
    flat = torch.cat([t.reshape(n, -1) for t in ids.values()], 1)
    columns, inv = torch.unique(flat, return_inverse=True)
    out, at = {}, 0
    for key, t in ids.items():
        width = 1 if t.ndim == 1 else t.reshape(n, -1).shape[1]
        out[key] = inv[:, at : at + width].reshape(t.shape)
        at += width
    return Readout(metric, columns, out)


def _provided(targets: Targets) -> list[str]:
    return [k for k in (*TARGET_KEYS, *targets.extra) if targets.get(k) is not None]


def columns_for(
    metric: Metric, answer_ids: torch.Tensor, distractor_ids: torch.Tensor
) -> tuple[Tensor | None, Tensor, Tensor]:
    """(columns to unembed or None for all, answer column index, distractor column index) of a
    metric that reads answer and distractor."""
    r = readout(metric, Targets(answer_ids, distractor_ids))
    return r.columns, r.cols.get("answer", answer_ids), r.cols.get("distractor", distractor_ids)


# ---------------------------------------------------------------------------- the metrics


@register_metric("logit_diff", full_vocab=False, description="logit(answer) - logit(distractor)")
def logit_diff(r: MetricRecord) -> PerPrompt:
    return r.at("answer") - r.at("distractor")


@register_metric("prob", full_vocab=True, description="softmax probability of the answer", reads=("answer",))
def answer_prob(r: MetricRecord) -> PerPrompt:
    return r.logits.float().softmax(-1)[r.rows, r.answer]


@register_metric("prob_diff", full_vocab=True, description="p(answer) - p(distractor)")
def prob_diff(r: MetricRecord) -> PerPrompt:
    p = r.logits.float().softmax(-1)
    return p[r.rows, r.answer] - p[r.rows, r.distractor]


def letter_scores(letter_logits: OptionLogits, correct: TokenIds) -> tuple[PerPrompt, PerPrompt]:
    """(correct minus mean of the other letters, top-1 among the letters is correct) per prompt."""
    r = torch.arange(letter_logits.shape[0], device=letter_logits.device)
    right = letter_logits[r, correct]
    others = (letter_logits.sum(-1) - right) / (letter_logits.shape[1] - 1)
    return right - others, (letter_logits.argmax(-1) == correct).float()


def _letters_and_correct(r: MetricRecord) -> tuple[Tensor, Tensor]:
    letters = r.cols["letters"]
    correct = (letters == r.answer.unsqueeze(1)).float().argmax(1)  # the answer's option slot
    return r.at("letters"), correct


@register_metric("letter_logit_diff", full_vocab=False, reads=("answer", "letters"),
                 description="MCQ: logit(correct letter) - mean logit of the other option letters")
def letter_logit_diff(r: MetricRecord) -> PerPrompt:
    return letter_scores(*_letters_and_correct(r))[0]


@register_metric("letter_accuracy", full_vocab=False, reads=("answer", "letters"),
                 description="MCQ: 1 where the correct letter has the highest logit of the option letters")
def letter_accuracy(r: MetricRecord) -> PerPrompt:
    return letter_scores(*_letters_and_correct(r))[1]


@register_metric("memory_context_diff", full_vocab=False, reads=("memory", "context"),
                 description="knowledge conflicts: logit(memory answer o_m) - logit(context answer o_c)")
def memory_context_diff(r: MetricRecord) -> PerPrompt:
    return r.at("memory") - r.at("context")


@register_metric("memory_prob", full_vocab=True, reads=("memory",),
                 description="knowledge conflicts: softmax probability of the memory answer o_m")
def memory_prob(r: MetricRecord) -> PerPrompt:
    return r.logits.float().softmax(-1)[r.rows, r.cols["memory"]]


@register_metric("context_prob", full_vocab=True, reads=("context",),
                 description="knowledge conflicts: softmax probability of the context answer o_c")
def context_prob(r: MetricRecord) -> PerPrompt:
    return r.logits.float().softmax(-1)[r.rows, r.cols["context"]]


def normalise(patched: Any, clean: float, corrupt: float) -> Any:
    """(m_patched - m_corrupt) / (m_clean - m_corrupt): 1 = clean behaviour, 0 = corrupt."""
    denom = clean - corrupt
    if abs(denom) < 1e-9:
        raise InterpError(
            "clean and corrupt metrics are equal, so the normalised score is undefined; "
            "check that the corruption changes the answer"
        )
    return (patched - corrupt) / denom
