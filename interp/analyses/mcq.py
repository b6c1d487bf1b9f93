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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyses.patching import ProgressFn, _check_direction, baseline_metrics, sweep_sites
from interp.analyses.results import PatchingResult
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import InterpError
from interp.core.metrics import get_metric
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site
from interp.core.types import Head
from interp.data.pairs import PairBatch, PairDataset, TokenizedPairs

VARIANTS = ("q", "k", "qk")
KEY_POSITIONS = ("labels", "all")


# ------------------------------------------------------------------------------ letter tokens


def _token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InterpError(f"label {text!r} is {len(ids)} tokens; MCQ labels must be single tokens")
    return ids[0]


def letter_ids(tokenizer, dataset: PairDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer-form ids of the four option letters (n, 4), index of the correct one (n,))."""
    ids, correct = [], []
    for i, p in enumerate(dataset):
        if "letter_tokens" not in p.meta or "correct_index" not in p.meta:
            raise InterpError(f"pair {i} has no MCQ meta (letter_tokens, correct_index); "
                              "use interp.data.mcq.generate_mcq")
        ids.append([_token_id(tokenizer, t) for t in p.meta["letter_tokens"]])
        correct.append(p.meta["correct_index"])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(correct, dtype=torch.long)


def label_positions(tokenizer, dataset: PairDataset, pb: PairBatch) -> torch.Tensor:
    """Position of each option's label token in the batch's clean prompts: (n, 4).

    The label as written in the options (``B`` in ``blue (B)`` or ``B.``), its last occurrence
    before the final position."""
    out = torch.empty(len(pb), 4, dtype=torch.long)
    T = pb.clean.shape[1]
    for row, i in enumerate(pb.indices):
        labels = dataset[i].meta["labels"]
        toks = pb.clean[row, : T - 1]
        for j, lab in enumerate(labels):
            hits = (toks == _token_id(tokenizer, lab)).nonzero().flatten()
            if hits.numel() == 0:
                raise InterpError(f"pair {i}: label {lab!r} not found in the prompt")
            out[row, j] = hits[-1]
    return out


def _letter_metrics(letter_logits: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct minus mean of the other letters, top-1 among the letters is correct) per prompt."""
    r = torch.arange(letter_logits.shape[0])
    right = letter_logits[r, correct]
    others = (letter_logits.sum(-1) - right) / (letter_logits.shape[1] - 1)
    return right - others, (letter_logits.argmax(-1) == correct).float()


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


def patch_heads_last_position(
    model: HookedModel,
    pairs: TokenizedPairs,
    *,
    direction: str = "denoising",
    metric: str = "logit_diff",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> PatchingResult:
    """Each head's output `z` patched at the last position only; axes ("layer", "head")."""
    _check_direction(direction)
    m = get_metric(metric)
    L, H = model.spec.n_layers, model.spec.n_heads
    sites = [Site("z", layer=layer, head=h, position=-1) for layer in range(L) for h in range(H)]
    batches = pairs.by_length().batches
    sums = torch.zeros(len(sites))
    clean_sum = corrupt_sum = 0.0
    n = 0
    for bi, pb in enumerate(batches):
        def prog(done: int, total: int, bi: int = bi) -> None:
            if progress:
                progress(bi * total + done, total * len(batches))

        # A one-prompt batch is swept one site per forward: the backend's resume-at-position
        # does not stack copies of a one-prompt key/value prefix (tlens `_repeat_batch`).
        bs = batch_size if len(pb) > 1 else 1
        vals = sweep_sites(model, pb, sites, direction=direction, metric=m, batch_size=bs, progress=prog)
        clean, corrupt = baseline_metrics(model, pb, m)
        sums += vals.sum(1)
        clean_sum += float(clean.sum())
        corrupt_sum += float(corrupt.sum())
        n += len(pb)
    return PatchingResult("head_patching_last_position", direction, metric, ("layer", "head"),
                          (sums / n).view(L, H), clean_sum / n, corrupt_sum / n, n)


# ------------------------------------------------------------------------------- subspaces


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


# ----------------------------------------------------------------------------- compression


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
    """Letter metrics with `hooks`, the forward resumed at `layer` and (when the backend can)
    at the last position: nothing before it changes in a last-position compression."""
    start = _resume_pos(model, b)
    x = b.inputs.resid_pre[layer][:, start:]
    with model.hooks(hooks):
        final = model.forward_from(layer, x, b.inputs, start_pos=start)
    cols, inv = b.ids.unique(return_inverse=True)
    logits = model.unembed(final[:, -1], cols.to(model.device)).float().cpu()
    letter = logits.gather(1, inv)
    ld, acc = _letter_metrics(letter, b.correct)
    return ld, acc


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
    if not data:
        raise InterpError("compress_qk needs at least one data set")
    first = next(iter(data))
    if subspaces and all(isinstance(k, tuple) for k in subspaces):
        subspaces = {first: subspaces}  # type: ignore[dict-item]
    fits: Mapping[str, Mapping[Head, HeadSubspaces]] = subspaces  # type: ignore[assignment]
    conditions = list(conditions) if conditions is not None else [(n, n) for n in data if n in fits]
    for ev, fit in conditions:
        if ev not in data or fit not in fits:
            raise InterpError(f"condition ({ev!r}, {fit!r}): data sets {list(data)}, fits {list(fits)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise InterpError(f"unknown compression variants {bad}; allowed: {', '.join(VARIANTS)}")
    if not ranks or any(r < 0 for r in ranks):
        raise InterpError(f"ranks must be a non-empty list of integers >= 0, got {list(ranks)}")
    heads = list(fits[conditions[0][1]])
    for fit in {f for _, f in conditions}:
        if list(fits[fit]) != heads:
            raise InterpError("every fit must cover the same heads")
    key_pos = fits[conditions[0][1]][heads[0]].key_positions
    d = fits[conditions[0][1]][heads[0]].q.dim

    shape = (len(heads), len(variants), len(ranks), len(conditions))
    ld_sum, acc_sum = torch.zeros(shape), torch.zeros(shape)
    base_ld, base_acc = torch.zeros(len(conditions)), torch.zeros(len(conditions))
    counts = torch.zeros(len(conditions))
    total = len(conditions) * len(heads) * len(variants) * len(ranks)
    done = 0
    prepared: dict[str, list[_Batch]] = {}
    for ci, (ev, fit) in enumerate(conditions):
        if ev not in prepared:
            ds, pairs = data[ev]
            prepared[ev] = prepare_batches(model, pairs, ds, key_pos)
        batches = prepared[ev]
        for b in batches:
            if "baseline" not in b.cache:
                b.cache["baseline"] = _evaluate(model, b, 0, [])
            ld, acc = b.cache["baseline"]
            base_ld[ci] += ld.sum()
            base_acc[ci] += acc.sum()
            counts[ci] += len(b.pb)
        for hi, head in enumerate(heads):
            hs = fits[fit][head]
            for vi, v in enumerate(variants):
                for ri, r in enumerate(ranks):
                    for b in batches:
                        hooks = compression_hooks(model, b, hs, v, r)
                        # No hooks (full rank): the unablated forward, computed once.
                        ld, acc = _evaluate(model, b, hs.layer, hooks) if hooks else b.cache["baseline"]
                        ld_sum[hi, vi, ri, ci] += ld.sum()
                        acc_sum[hi, vi, ri, ci] += acc.sum()
                    done += 1
                    if progress:
                        progress(done, total)
            for b in batches:  # the compressed keys of this head's fit
                for key in [key for key in b.cache if key != "baseline"]:
                    del b.cache[key]
    n = counts.view(1, 1, 1, -1)
    return QKCompressionResult(
        heads, list(variants), list(ranks), [_condition_name(ev, fit) for ev, fit in conditions],
        [ev for ev, _ in conditions], [fit for _, fit in conditions], ld_sum / n, acc_sum / n,
        base_ld / counts, base_acc / counts, d, key_pos,
    )


def _condition_name(ev: str, fit: str) -> str:
    return ev if ev == fit else f"{ev}_with_{fit}_fit"
