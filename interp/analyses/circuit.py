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
from interp.analyses.patching import ProgressFn, baseline_metrics
from interp.analyses.path_patching import Receiver, path_patch_senders, path_patching
from interp.analyses.results import PatchingResult
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
        a, d = pb.answer_ids.to(model.device), pb.distractor_ids.to(model.device)
        r = torch.arange(len(pb), device=model.device)
        circ = m.fn(last, a, d) if m.full_vocab else last[r, a] - last[r, d]
        full_sum += float(clean.sum())
        corrupt_sum += float(corrupt.sum())
        circ_sum += float(circ.sum())
        n += len(pb)
    full, circ = full_sum / n, circ_sum / n
    return {"full_metric": full, "circuit_metric": circ, "corrupt_metric": corrupt_sum / n,
            "faithfulness": circ / full if full else float("nan"), "n_heads_kept": len(keep_set),
            "n_heads": L * H}


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
) -> CircuitResult:
    def prog(stage: str) -> ProgressFn:
        return lambda d, t: progress(stage, d, t) if progress else None

    notes: list[str] = []
    nodes: list[dict] = []
    edges: list[dict] = []
    maps: dict[str, PatchingResult] = {}
    patterns = head_pattern_scores(model, seed=pattern_seed)

    maps["to_logits"] = path_patching(model, pairs, [Receiver("logits")], freeze_mlps=freeze_mlps,
                                      metric=metric, batch_size=batch_size, progress=prog("movers"))
    eff = _effects(maps["to_logits"])
    movers = _pick(eff, k_movers, threshold)
    negative = _pick(eff, k_negative, threshold, sign=-1.0)
    copies = copy_scores(model, pairs, dataset, [h for h, _ in movers + negative], role=answer_role) \
        if all("positions" in dataset.pairs[i].meta for i in range(len(dataset))) else {}
    for cls, chosen in (("name_mover", movers), ("negative_name_mover", negative)):
        for (layer, h), e in chosen:
            nodes.append({"layer": layer, "head": h, "class": cls, "score": e, "copy_score": copies.get((layer, h))})
            edges.append({"sender_layer": layer, "sender_head": h, "receiver_layer": None, "receiver_head": None,
                          "receiver_input": "logits", "strength": e})
    if not movers:
        notes.append("no head passes the threshold into the logits; the circuit is empty")
        return CircuitResult(pd.DataFrame(nodes), pd.DataFrame(edges), maps, patterns,
                             mean_ablation_faithfulness(model, pairs, [], metric), notes)

    taken = {h for h, _ in movers + negative}
    inhibition: list[tuple[Head, float]] = []
    first_mover = min(layer for (layer, _), _ in movers)
    if first_mover > 0:
        recv = [Receiver("q", layer, h) for (layer, h), _ in movers]
        maps["to_mover_queries"] = path_patching(model, pairs, recv, freeze_mlps=freeze_mlps, metric=metric,
                                                 batch_size=batch_size, progress=prog("inhibition"))
        inhibition = _pick(_effects(maps["to_mover_queries"]), k_inhibition, threshold, exclude=taken)
        if not inhibition:
            best = float(_effects(maps["to_mover_queries"]).nan_to_num(nan=float("-inf")).max())
            notes.append(f"no head reaches the threshold {threshold} into the movers' queries (largest "
                         f"effect {best:+.3f}): no inhibition heads, so the upstream steps are skipped")
        for (layer, h), e in inhibition:
            nodes.append({"layer": layer, "head": h, "class": "s_inhibition", "score": e, "copy_score": None})
        edges += _edge_strengths(model, pairs, [h for h, _ in inhibition], recv, freeze_mlps, metric)
        taken |= {h for h, _ in inhibition}

    induction: list[Head] = []
    if inhibition and min(layer for (layer, _), _ in inhibition) > 0:
        recv = [Receiver("v", layer, h) for (layer, h), _ in inhibition]
        maps["to_inhibition_values"] = path_patching(model, pairs, recv, freeze_mlps=freeze_mlps, metric=metric,
                                                     batch_size=batch_size, progress=prog("upstream"))
        upstream = _pick(_effects(maps["to_inhibition_values"]), k_upstream, threshold, exclude=taken)
        for (layer, h), e in upstream:
            ind, dup = float(patterns.scores["induction"][layer, h]), float(patterns.scores["duplicate_token"][layer, h])
            cls = "induction" if ind >= dup and ind >= 0.2 else "duplicate_token" if dup >= 0.2 else "other_upstream"
            if cls == "induction":
                induction.append((layer, h))
            nodes.append({"layer": layer, "head": h, "class": cls, "score": e, "copy_score": None})
        edges += _edge_strengths(model, pairs, [h for h, _ in upstream], recv, freeze_mlps, metric)
        taken |= {h for h, _ in upstream}

    if induction and min(layer for layer, _ in induction) > 0:
        recv = [Receiver("k", layer, h) for layer, h in induction]
        maps["to_induction_keys"] = path_patching(model, pairs, recv, freeze_mlps=freeze_mlps, metric=metric,
                                                  batch_size=batch_size, progress=prog("previous"))
        cands = _pick(_effects(maps["to_induction_keys"]), k_previous * 3, threshold, exclude=taken)
        prev = [(h, e) for h, e in cands if float(patterns.scores["previous_token"][h]) >= 0.3][:k_previous]
        for (layer, h), e in prev:
            nodes.append({"layer": layer, "head": h, "class": "previous_token", "score": e, "copy_score": None})
        edges += _edge_strengths(model, pairs, [h for h, _ in prev], recv, freeze_mlps, metric)
    elif inhibition:
        notes.append("no induction head among the upstream heads: previous-token step skipped")

    node_df = pd.DataFrame(nodes)
    faith = mean_ablation_faithfulness(model, pairs, [(int(r.layer), int(r.head)) for r in node_df.itertuples()], metric)
    return CircuitResult(node_df, pd.DataFrame(edges), maps, patterns, faith, notes)


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
