"""Low-rank compression of an MCQ letter head's query and/or key (Lieberum et al. 2023): the
letter metric with the query and/or key replaced by ``mean + top-r projection of (x - mean)``.

Queries and keys are taken *before* the rotary embedding (sites ``q`` and ``k``); under GQA the
compressed key is seen only by the studied head (its last-row scores are recomputed from its
rotated query and the compressed keys rotated by the model). See `interp.analyses.mcq`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyses.mcq_letters import label_positions, letter_ids, letter_targets
from interp.analyses.mcq_subspace import HeadSubspaces, Subspace
from interp.analyses.sweep import resume
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import InterpError
from interp.core.metrics import get_metric, readout
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site
from interp.core.types import Head
from interp.data.pairs import PairBatch, PairDataset, TokenizedPairs

VARIANTS = ("q", "k", "qk")

@dataclass(frozen=True)
class QKCompressionResult:
    """Letter metric with a head's query / key / both compressed to each rank.

    `letter_logit_diff` and `accuracy` are (head, variant, rank, condition); a condition names
    the data evaluated on and the data the subspaces were fitted on ("random" evaluated with
    "normal" subspaces tests whether the subspace carries over to other labels). `baseline_*`
    is the unablated model on each condition's data, through the same forward."""

    heads: list[Head]
    variants: list[str]
    ranks: list[int]
    conditions: list[str]
    eval_data: list[str]  # per condition
    fit_data: list[str]  # per condition
    letter_logit_diff: torch.Tensor
    accuracy: torch.Tensor
    baseline_logit_diff: torch.Tensor  # (condition,)
    baseline_accuracy: torch.Tensor  # (condition,)
    d_head: int
    key_positions: str
    axes: tuple[str, ...] = ("head", "variant", "rank", "condition")

    def share(self, metric: str = "letter_logit_diff") -> torch.Tensor:
        base = self.baseline_logit_diff if metric == "letter_logit_diff" else self.baseline_accuracy
        vals = getattr(self, metric)
        return vals / base.view(1, 1, 1, -1)

    def share_of_head_effect(self) -> torch.Tensor:
        """(m_r - m_0) / (m_full - m_0) of the letter logit diff: how much of what the head's
        query/key content does (its effect beyond the mean, rank 0) survives at rank r. NaN
        without rank 0 in `ranks` or where the rank-0 metric equals the unablated one."""
        if 0 not in self.ranks:
            return torch.full_like(self.letter_logit_diff, float("nan"))
        m0 = self.letter_logit_diff[:, :, self.ranks.index(0) : self.ranks.index(0) + 1]
        denom = self.baseline_logit_diff.view(1, 1, 1, -1) - m0
        out = (self.letter_logit_diff - m0) / denom
        return torch.where(denom.abs() > 1e-6, out, torch.full_like(out, float("nan")))

    def to_frame(self) -> pd.DataFrame:
        ld_share, acc_share = self.share("letter_logit_diff"), self.share("accuracy")
        effect = self.share_of_head_effect()
        rows = []
        for hi, (layer, h) in enumerate(self.heads):
            for vi, v in enumerate(self.variants):
                for ri, r in enumerate(self.ranks):
                    for ci, c in enumerate(self.conditions):
                        idx = (hi, vi, ri, ci)
                        rows.append({
                            "layer": layer, "head": h, "label": f"L{layer}H{h}", "variant": v,
                            "rank": r, "full_rank": r >= self.d_head, "condition": c,
                            "eval_data": self.eval_data[ci], "fit_data": self.fit_data[ci],
                            "letter_logit_diff": float(self.letter_logit_diff[idx]),
                            "accuracy": float(self.accuracy[idx]),
                            "baseline_logit_diff": float(self.baseline_logit_diff[ci]),
                            "baseline_accuracy": float(self.baseline_accuracy[ci]),
                            "share_logit_diff": float(ld_share[idx]),
                            "share_accuracy": float(acc_share[idx]),
                            "share_of_head_effect": float(effect[idx]),
                        })
        return pd.DataFrame(rows)


@dataclass
class _Batch:
    """One equal-length batch of an evaluation set, with what every compression run reuses."""

    pb: PairBatch
    inputs: BlockInputs  # of the clean prompts
    ids: torch.Tensor  # (n, 4) letter ids
    correct: torch.Tensor  # (n,)
    label_pos: torch.Tensor | None  # (n, 4)
    cache: dict = field(default_factory=dict)


def _resume_pos(model: HookedModel, b: _Batch) -> int:
    return b.pb.clean.shape[1] - 1 if b.inputs.resumes_at_position else 0


def _evaluate(model: HookedModel, b: _Batch, layer: int, hooks: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Letter metrics (`letter_logit_diff`, `letter_accuracy`) with `hooks`, the forward resumed
    at `layer` and (when the backend can) at the last position: nothing before it changes in a
    last-position compression."""
    final = resume(model, b.inputs, layer, 1, hooks, start=_resume_pos(model, b))
    rd = readout(get_metric("letter_logit_diff"), letter_targets(b.ids, b.correct))
    record = rd.record(model.unembed(final[:, -1], rd.columns.to(model.device)).float().cpu())  # type: ignore[union-attr]
    return rd.metric(record), get_metric("letter_accuracy")(record)


def _q_hook(head: int, sub: Subspace, rank: int):
    def fn(t: torch.Tensor, _s: Site) -> torch.Tensor:  # (batch, pos, head, d)
        t = t.clone()
        t[:, -1, head] = sub.project(t[:, -1, head], rank)
        return t

    return fn


def _k_hook(kv: int, sub: Subspace, rank: int, pos: torch.Tensor | None):
    def fn(t: torch.Tensor, _s: Site) -> torch.Tensor:  # (batch, pos, kv_head, d)
        t = t.clone()
        if pos is None:
            t[:, :, kv] = sub.project(t[:, :, kv], rank)
        else:
            rows = torch.arange(t.shape[0], device=t.device).unsqueeze(1)
            t[rows, pos, kv] = sub.project(t[rows, pos, kv], rank)
        return t

    return fn


@torch.no_grad()
def _compressed_rotated_keys(model: HookedModel, b: _Batch, hs: HeadSubspaces, rank: int) -> torch.Tensor:
    """The head's KV-group keys after rotation, with the pre-rotation keys compressed:
    (batch, pos, d). One block run with the compression on the shared key; only this block's
    `k_rot` is kept (the other heads never see it)."""
    key = (hs.layer, hs.kv_head, rank, id(hs.k))
    if key in b.cache:
        return b.cache[key]
    pos = b.label_pos.to(model.device) if (hs.key_positions == "labels" and b.label_pos is not None) else None
    store: dict[str, torch.Tensor] = {}

    def keep(name: str, select):
        def fn(t: torch.Tensor, _s: Site) -> None:
            store[name] = select(t).detach()

        return fn

    hooks = [(Site("k", hs.layer), _k_hook(hs.kv_head, hs.k, rank, pos)),
             (Site("q_rot", hs.layer), keep("q_rot", lambda t: t[:, :, hs.head])),
             (Site("k_rot", hs.layer), keep("k_rot", lambda t: t[:, :, hs.kv_head])),
             (Site("attn_scores", hs.layer), keep("scores", lambda t: t[:, hs.head]))]
    with model.hooks(hooks):
        model.forward_from(hs.layer, b.inputs.resid_pre[hs.layer], b.inputs, end_layer=hs.layer + 1)
    # This block run scored the compressed keys itself: the rebuild must give the same scores.
    check_recompute(store["q_rot"], store["k_rot"], store["scores"], scale=model.attention_scale(hs.layer),
                    softcap=model.attention_softcap(hs.layer),
                    what=f"MCQ key compression on {model.spec.architecture} layer {hs.layer}")
    b.cache[key] = store["k_rot"]
    return store["k_rot"]


def _score_hooks(model: HookedModel, hs: HeadSubspaces, keys_rot: torch.Tensor) -> list:
    """Recompute the head's last-row attention scores from its own rotated query and `keys_rot`
    with the model's scale, softcap and mask (the rebuild was checked where the keys were made)."""
    scale, cap = model.attention_scale(hs.layer), model.attention_softcap(hs.layer)
    current: dict[str, torch.Tensor] = {}

    def keep_q(t: torch.Tensor, _s: Site) -> None:  # (batch, pos, head, d)
        current["q"] = t[:, -1:, hs.head]

    def scores(t: torch.Tensor, _s: Site) -> torch.Tensor:  # (batch, head, q_pos, k_pos)
        t = t.clone()
        like = t[:, hs.head, -1:]
        t[:, hs.head, -1:] = recompute_scores(current["q"], keys_rot, like, scale=scale, softcap=cap)
        return t

    return [(Site("q_rot", hs.layer), keep_q), (Site("attn_scores", hs.layer), scores)]


def compression_hooks(model: HookedModel, b: _Batch, hs: HeadSubspaces, variant: str, rank: int,
                      *, force_keys: bool = False) -> list:
    """Hooks that compress the head's query (`q`), key (`k`) or both (`qk`) at `rank`; none at
    full rank. `force_keys` installs the key path even at full rank (tests: the recomputed
    scores must equal the model's own)."""
    if variant not in VARIANTS:
        raise InterpError(f"unknown compression variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    hooks: list = []
    if "q" in variant and rank < hs.q.dim:
        hooks.append((Site("q", hs.layer), _q_hook(hs.head, hs.q, rank)))
    if "k" in variant and (rank < hs.k.dim or force_keys):
        hooks += _score_hooks(model, hs, _compressed_rotated_keys(model, b, hs, rank))
    return hooks


@torch.no_grad()
def prepare_batches(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset,
                    key_positions: str = "labels") -> list[_Batch]:
    ids, correct = letter_ids(model.tokenizer, dataset)
    out = []
    for pb in pairs.by_length().batches:
        pos = label_positions(model.tokenizer, dataset, pb) if key_positions == "labels" else None
        out.append(_Batch(pb, model.capture_block_inputs(pb.clean.to(model.device)), ids[pb.indices],
                          correct[pb.indices], pos))
    return out


def _check_compression(data, subspaces, ranks, variants, conditions):
    """(fits by name, conditions) after checking every argument of `compress_qk`."""
    if not data:
        raise InterpError("compress_qk needs at least one data set")
    first = next(iter(data))
    if subspaces and all(isinstance(k, tuple) for k in subspaces):
        subspaces = {first: subspaces}
    fits: Mapping[str, Mapping[Head, HeadSubspaces]] = subspaces
    conditions = list(conditions) if conditions is not None else [(n, n) for n in data if n in fits]
    for ev, fit in conditions:
        if ev not in data or fit not in fits:
            raise InterpError(f"condition ({ev!r}, {fit!r}): data sets {list(data)}, fits {list(fits)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise InterpError(f"unknown compression variants {bad}; allowed: {', '.join(VARIANTS)}")
    if not ranks or any(r < 0 for r in ranks):
        raise InterpError(f"ranks must be a non-empty list of integers >= 0, got {list(ranks)}")
    if not conditions:
        raise InterpError(f"no condition to evaluate: data sets {list(data)}, fits {list(fits)}")
    heads = list(fits[conditions[0][1]])
    if any(list(fits[fit]) != heads for _, fit in conditions):
        raise InterpError("every fit must cover the same heads")
    return fits, conditions


def _baselines(model: HookedModel, batches: list[_Batch]) -> tuple[float, float, int]:
    """Summed unablated letter metrics (logit diff, accuracy) over the batches, and the count;
    each batch keeps its own in `cache["baseline"]` (the full-rank result)."""
    ld_sum = acc_sum = torch.zeros(())
    count = 0
    for b in batches:
        if "baseline" not in b.cache:
            b.cache["baseline"] = _evaluate(model, b, 0, [])
        ld, acc = b.cache["baseline"]
        ld_sum, acc_sum, count = ld_sum + ld.sum(), acc_sum + acc.sum(), count + len(b.pb)
    return ld_sum, acc_sum, count


def _compressed_sums(model: HookedModel, batches: list[_Batch], hs: HeadSubspaces, variant: str,
                     rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed letter metrics over the batches with the head compressed (`variant`, `rank`)."""
    ld_sum = acc_sum = torch.zeros(())
    for b in batches:
        hooks = compression_hooks(model, b, hs, variant, rank)
        # No hooks (full rank): the unablated forward, computed once.
        ld, acc = _evaluate(model, b, hs.layer, hooks) if hooks else b.cache["baseline"]
        ld_sum, acc_sum = ld_sum + ld.sum(), acc_sum + acc.sum()
    return ld_sum, acc_sum


def _drop_keys(batches: list[_Batch]) -> None:
    """Forget the compressed keys of one head's fit (everything but the baseline)."""
    for b in batches:
        for key in [key for key in b.cache if key != "baseline"]:
            del b.cache[key]


@torch.no_grad()
def compress_qk(
    model: HookedModel,
    data: Mapping[str, tuple[PairDataset, TokenizedPairs]],
    subspaces: Mapping[str, Mapping[Head, HeadSubspaces]] | Mapping[Head, HeadSubspaces],
    ranks: Sequence[int],
    *,
    variants: Sequence[str] = VARIANTS,
    conditions: Sequence[tuple[str, str]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QKCompressionResult:
    """The letter metric with each head's q / k / q and k compressed to each rank.

    `data`: name -> (dataset, tokenized pairs); `subspaces`: fit name -> {head: subspaces}
    (a plain {head: subspaces} counts as fitted on the first data set). `conditions`:
    (eval data, fit data) pairs, default each data set with its own fit."""
    fits, conditions = _check_compression(data, subspaces, ranks, variants, conditions)
    heads = list(fits[conditions[0][1]])
    key_pos = fits[conditions[0][1]][heads[0]].key_positions
    shape = (len(heads), len(variants), len(ranks), len(conditions))
    ld_sum, acc_sum = torch.zeros(shape), torch.zeros(shape)
    base_ld, base_acc = torch.zeros(len(conditions)), torch.zeros(len(conditions))
    counts = torch.zeros(len(conditions))
    total, done = len(conditions) * len(heads) * len(variants) * len(ranks), 0
    prepared: dict[str, list[_Batch]] = {}
    for ci, (ev, fit) in enumerate(conditions):
        if ev not in prepared:
            prepared[ev] = prepare_batches(model, data[ev][1], data[ev][0], key_pos)
        batches = prepared[ev]
        base_ld[ci], base_acc[ci], counts[ci] = _baselines(model, batches)
        for hi, head in enumerate(heads):
            for vi, v in enumerate(variants):
                for ri, r in enumerate(ranks):
                    ld_sum[hi, vi, ri, ci], acc_sum[hi, vi, ri, ci] = _compressed_sums(
                        model, batches, fits[fit][head], v, r)
                    done += 1
                    if progress:
                        progress(done, total)
            _drop_keys(batches)
    n = counts.view(1, 1, 1, -1)
    return QKCompressionResult(
        heads, list(variants), list(ranks), [_condition_name(ev, fit) for ev, fit in conditions],
        [ev for ev, _ in conditions], [fit for _, fit in conditions], ld_sum / n, acc_sum / n,
        base_ld / counts, base_acc / counts, fits[conditions[0][1]][heads[0]].q.dim, key_pos,
    )


def _condition_name(ev: str, fit: str) -> str:
    return ev if ev == fit else f"{ev}_with_{fit}_fit"

