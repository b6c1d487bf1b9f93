"""Circuit discovery by path patching (Wang et al. 2022 IOI; Merullo et al. 2023 reuse).

Starting from the output and walking back, each step path-patches every head as a sender into
the heads found so far:
1. movers: senders into the logits (IOI: name movers; positive effect) and negative movers;
   for each mover, an OV copy score: how often the head, applied to the value at the answer's
   position, puts the answer token in its top-5 logits (does it copy what it attends to?);
2. inhibition: senders into the movers' queries (IOI: S-inhibition heads);
3. upstream: senders into the inhibition heads' values, labelled induction or duplicate-token
   by their attention-pattern scores (`head_pattern_scores`);
4. previous-token: senders into the induction heads' keys with a high previous-token score.
Edges carry per-receiver path-patching strengths, (m_clean - m_patched) / (m_clean -
m_corrupt): the share of the clean-vs-corrupt metric gap the edge carries.

Faithfulness (Wang et al.): the metric with every head outside the circuit mean-ablated (its
output replaced by its mean over the corrupt prompts, per position), as a share of the full
model's metric.

Selection rule (where the papers used judgement): at each step, the k heads with the largest
effect whose effect exceeds `threshold` (in normalised units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyses.head_patterns import HeadScoresResult, head_pattern_scores
from interp.analyses.patching import baseline_metrics, pair_readout
from interp.analyses.path_patching import Receiver, path_patch_senders, path_patching
from interp.analyses.results import PatchingResult
from interp.core.execution import Executor
from interp.core.metrics import get_metric
from interp.core.model import HookedModel
from interp.core.norms import probe_norm
from interp.core.sites import Site
from interp.core.types import Head
from interp.data.pairs import PairDataset, TokenizedPairs


@dataclass(frozen=True)
class CircuitResult:
    nodes: pd.DataFrame  # layer, head, class, score (+ copy_score for movers)
    edges: pd.DataFrame  # sender_layer, sender_head, receiver_layer, receiver_head, receiver_input, strength
    maps: dict[str, PatchingResult]
    pattern_scores: HeadScoresResult
    faithfulness: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def heads(self, cls: str | None = None) -> list[Head]:
        df = self.nodes if cls is None else self.nodes[self.nodes["class"] == cls]
        return [(int(r.layer), int(r.head)) for r in df.itertuples()]

    def to_frame(self) -> pd.DataFrame:
        return self.nodes


def _effects(res: PatchingResult) -> torch.Tensor:
    """Path-patching effect per head: the share of the clean-corrupt gap the path carries."""
    return 1.0 - res.normalised  # noising: normalised 1 = no effect


def _pick(effect: torch.Tensor, k: int, threshold: float, *, sign: float = 1.0, exclude=()) -> list[tuple[Head, float]]:
    flat = (sign * effect).flatten().nan_to_num(nan=float("-inf"))
    order = flat.argsort(descending=True)
    H = effect.shape[1]
    out = []
    for i in order.tolist():
        if len(out) >= k or flat[i] <= threshold:
            break
        head = (i // H, i % H)
        if head not in exclude:
            out.append((head, float(effect.flatten()[i])))
    return out


@torch.no_grad()
def copy_scores(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset, heads: list[Head],
                role: str = "IO", top: int = 5) -> dict[Head, float]:
    """Share of prompts where head h's OV circuit, applied to the value at the answer's
    position (`meta.positions[role]`), ranks the answer token in its top-`top` logits."""
    if not heads:
        return {}
    group = model.spec.n_heads // model.spec.n_kv_heads
    W_U, _ = model.unembed_matrix()
    norm_w = probe_norm(model.final_norm_module(), model.spec.d_model).weight  # Gemma's 1 + w included
    hits = {h: 0 for h in heads}
    n = 0
    layers = sorted({layer for layer, _ in heads})
    for pb in pairs.by_length().batches:
        _, cache = model.run_with_cache(pb.clean.to(model.device), [Site("v", layer=layer) for layer in layers])
        metas = [dataset.pairs[i].meta["positions"] for i in pb.indices]
        # positions index the prompt as generated; a prepended <bos> shifts them (END is the last token)
        shift = torch.tensor([pb.clean.shape[1] - 1 - m["END"] for m in metas])
        pos = torch.tensor([m[role] for m in metas]) + shift
        r = torch.arange(len(pb))
        for layer, h in heads:
            v = cache[Site("v", layer=layer)][r, pos, h // group]  # (batch, d_head)
            logits = (v @ model.W_O(layer)[h] * norm_w) @ W_U  # scale-free under the final norm
            top_ids = logits.topk(top, -1).indices.cpu()
            hits[(layer, h)] += int((top_ids == pb.answer_ids[:, None]).any(-1).sum())
        n += len(pb)
    return {h: c / n for h, c in hits.items()}


def _edge_strengths(model, pairs, senders: list[Head], receivers: list[Receiver], freeze_mlps: bool, metric: str):
    """Per (sender, receiver) strength, one receiver at a time."""
    m = get_metric(metric)
    rows = []
    for rec in receivers:
        vals, clean_sum, corrupt_sum, n = torch.zeros(len(senders)), 0.0, 0.0, 0
        for pb in pairs.by_length().batches:
            ok = [s for s in senders if s[0] < rec.layer]  # type: ignore[operator]
            if not ok:
                continue
            v = path_patch_senders(model, pb, ok, [rec], freeze_mlps=freeze_mlps, metric=m)
            c, x = baseline_metrics(model, pb, m)
            for i, s in enumerate(ok):
                vals[senders.index(s)] += float(v[i].sum())
            clean_sum, corrupt_sum, n = clean_sum + float(c.sum()), corrupt_sum + float(x.sum()), n + len(pb)
        if n == 0:
            continue
        mc, mx = clean_sum / n, corrupt_sum / n
        for i, s in enumerate(senders):
            if s[0] < rec.layer:  # type: ignore[operator]
                rows.append({"sender_layer": s[0], "sender_head": s[1], "receiver_layer": rec.layer,
                             "receiver_head": rec.head, "receiver_input": rec.input,
                             "strength": (mc - vals[i].item() / n) / (mc - mx)})
    return rows


@torch.no_grad()
def mean_ablation_faithfulness(model: HookedModel, pairs: TokenizedPairs, keep: list[Head],
                               metric: str = "logit_diff") -> dict[str, float]:
    """Metric with all heads outside `keep` mean-ablated (corrupt-prompt mean per position)."""
    m = get_metric(metric)
    L, H = model.spec.n_layers, model.spec.n_heads
    keep_set = set(keep)
    full_sum = circ_sum = corrupt_sum = 0.0
    n = 0
    for pb in pairs.by_length().batches:
        _, means = model.run_with_cache(pb.corrupt.to(model.device), [Site("z", layer=layer) for layer in range(L)])
        hooks = []
        for layer in range(L):
            ablate = [h for h in range(H) if (layer, h) not in keep_set]
            if not ablate:
                continue
            mean = means[Site("z", layer=layer)].mean(0, keepdim=True)

            def fn(t, _s, ablate=ablate, mean=mean):
                t = t.clone()
                t[:, :, ablate] = mean[:, :, ablate].to(t.dtype)
                return t

            hooks.append((Site("z", layer=layer), fn))
        clean, corrupt = baseline_metrics(model, pb, m)
        with model.hooks(hooks):
            last = model.forward(pb.clean.to(model.device))[:, -1]
        circ = pair_readout(model, pb, m).score_vocab(last)
        full_sum += float(clean.sum())
        corrupt_sum += float(corrupt.sum())
        circ_sum += float(circ.sum())
        n += len(pb)
    full, circ = full_sum / n, circ_sum / n
    return {"full_metric": full, "circuit_metric": circ, "corrupt_metric": corrupt_sum / n,
            "faithfulness": circ / full if full else float("nan"), "n_heads_kept": len(keep_set),
            "n_heads": L * H}


@dataclass
class _Walk:
    """What `discover_circuit` carries from step to step."""

    model: HookedModel
    pairs: TokenizedPairs
    threshold: float
    freeze_mlps: bool
    metric: str
    batch_size: int
    progress: Callable[[str, int, int], None] | None
    executors: Callable[[str], Executor | None] | None = None  # where each named sweep's shards run
    nodes: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    maps: dict[str, PatchingResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    taken: set[Head] = field(default_factory=set)

    def sweep(self, name: str, receivers: list[Receiver], stage: str) -> torch.Tensor:
        """Path-patch every head into `receivers`; the effect map, kept as `maps[name]`."""
        progress = self.progress

        def prog(d: int, t: int) -> None:
            if progress:
                progress(stage, d, t)

        executor = self.executors(name) if self.executors is not None else None
        self.maps[name] = path_patching(self.model, self.pairs, receivers, freeze_mlps=self.freeze_mlps,
                                        metric=self.metric, batch_size=self.batch_size, progress=prog,
                                        executor=executor)
        return _effects(self.maps[name])

    def add(self, cls: str, chosen: list[tuple[Head, float]], copies: dict[Head, float] | None = None) -> None:
        for (layer, h), e in chosen:
            self.nodes.append({"layer": layer, "head": h, "class": cls, "score": e,
                               "copy_score": None if copies is None else copies.get((layer, h))})
        self.taken |= {h for h, _ in chosen}

    def connect(self, senders: list[Head], receivers: list[Receiver]) -> None:
        self.edges += _edge_strengths(self.model, self.pairs, senders, receivers, self.freeze_mlps, self.metric)

    def result(self, patterns: HeadScoresResult) -> CircuitResult:
        node_df = pd.DataFrame(self.nodes)
        keep = [(int(r.layer), int(r.head)) for r in node_df.itertuples()]
        faith = mean_ablation_faithfulness(self.model, self.pairs, keep, self.metric)
        return CircuitResult(node_df, pd.DataFrame(self.edges), self.maps, patterns, faith, self.notes)


def _movers_step(w: _Walk, dataset: PairDataset, k_movers: int, k_negative: int,
                 answer_role: str) -> list[tuple[Head, float]]:
    eff = w.sweep("to_logits", [Receiver("logits")], "movers")
    movers = _pick(eff, k_movers, w.threshold)
    negative = _pick(eff, k_negative, w.threshold, sign=-1.0)
    has_positions = all("positions" in dataset.pairs[i].meta for i in range(len(dataset)))
    copies = copy_scores(w.model, w.pairs, dataset, [h for h, _ in movers + negative], role=answer_role) \
        if has_positions else {}
    for cls, chosen in (("name_mover", movers), ("negative_name_mover", negative)):
        w.add(cls, chosen, copies)
        w.edges += [{"sender_layer": layer, "sender_head": h, "receiver_layer": None, "receiver_head": None,
                     "receiver_input": "logits", "strength": e} for (layer, h), e in chosen]
    return movers


def _inhibition_step(w: _Walk, movers: list[tuple[Head, float]], k: int) -> list[tuple[Head, float]]:
    if min(layer for (layer, _), _ in movers) == 0:
        return []
    recv = [Receiver("q", layer, h) for (layer, h), _ in movers]
    eff = w.sweep("to_mover_queries", recv, "inhibition")
    inhibition = _pick(eff, k, w.threshold, exclude=w.taken)
    if not inhibition:
        best = float(eff.nan_to_num(nan=float("-inf")).max())
        w.notes.append(f"no head reaches the threshold {w.threshold} into the movers' queries (largest "
                       f"effect {best:+.3f}): no inhibition heads, so the upstream steps are skipped")
    w.add("s_inhibition", inhibition)
    w.connect([h for h, _ in inhibition], recv)
    return inhibition


def _upstream_class(patterns: HeadScoresResult, head: Head) -> str:
    ind, dup = float(patterns.scores["induction"][head]), float(patterns.scores["duplicate_token"][head])
    return "induction" if ind >= dup and ind >= 0.2 else "duplicate_token" if dup >= 0.2 else "other_upstream"


def _upstream_step(w: _Walk, inhibition: list[tuple[Head, float]], k: int, patterns: HeadScoresResult) -> list[Head]:
    if not inhibition or min(layer for (layer, _), _ in inhibition) == 0:
        return []
    recv = [Receiver("v", layer, h) for (layer, h), _ in inhibition]
    upstream = _pick(w.sweep("to_inhibition_values", recv, "upstream"), k, w.threshold, exclude=w.taken)
    for head, e in upstream:
        w.add(_upstream_class(patterns, head), [(head, e)])
    w.connect([h for h, _ in upstream], recv)
    return [h for h, _ in upstream if _upstream_class(patterns, h) == "induction"]


def _previous_step(w: _Walk, induction: list[Head], k: int, patterns: HeadScoresResult) -> None:
    recv = [Receiver("k", layer, h) for layer, h in induction]
    cands = _pick(w.sweep("to_induction_keys", recv, "previous"), k * 3, w.threshold, exclude=w.taken)
    prev = [(h, e) for h, e in cands if float(patterns.scores["previous_token"][h]) >= 0.3][:k]
    w.add("previous_token", prev)
    w.connect([h for h, _ in prev], recv)


def discover_circuit(
    model: HookedModel,
    pairs: TokenizedPairs,
    dataset: PairDataset,
    *,
    k_movers: int = 4,
    k_negative: int = 2,
    k_inhibition: int = 4,
    k_upstream: int = 4,
    k_previous: int = 3,
    threshold: float = 0.02,
    freeze_mlps: bool = False,
    metric: str = "logit_diff",
    answer_role: str = "IO",
    batch_size: int = 64,
    pattern_seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    executors: Callable[[str], Executor | None] | None = None,
) -> CircuitResult:
    """`executors(name)`: the executor of each path-patching sweep, by its map name (to_logits,
    ...), so a run can shard, store and resume them (`interp.core.execution`); None: in process."""
    w = _Walk(model, pairs, threshold, freeze_mlps, metric, batch_size, progress, executors)
    patterns = head_pattern_scores(model, seed=pattern_seed)
    movers = _movers_step(w, dataset, k_movers, k_negative, answer_role)
    if not movers:
        w.notes.append("no head passes the threshold into the logits; the circuit is empty")
        return CircuitResult(pd.DataFrame(w.nodes), pd.DataFrame(w.edges), w.maps, patterns,
                             mean_ablation_faithfulness(model, pairs, [], metric), w.notes)
    inhibition = _inhibition_step(w, movers, k_inhibition)
    induction = _upstream_step(w, inhibition, k_upstream, patterns)
    if induction and min(layer for layer, _ in induction) > 0:
        _previous_step(w, induction, k_previous, patterns)
    elif inhibition:
        w.notes.append("no induction head among the upstream heads: previous-token step skipped")
    return w.result(patterns)


def circuit_overlap(a: CircuitResult, b: CircuitResult) -> dict[str, float]:
    """Jaccard overlap of two circuits' heads, share of b's heads that are in a, per class."""
    ha, hb = set(a.heads()), set(b.heads())
    out = {
        "jaccard": len(ha & hb) / len(ha | hb) if ha | hb else float("nan"),
        "share_of_b_in_a": len(ha & hb) / len(hb) if hb else float("nan"),
        "n_a": len(ha), "n_b": len(hb), "n_shared": len(ha & hb),
    }
    for cls in sorted(set(b.nodes["class"]) if len(b.nodes) else []):
        hb_c = set(b.heads(cls))
        out[f"share_of_b_in_a[{cls}]"] = len(hb_c & ha) / len(hb_c) if hb_c else float("nan")
    return out
