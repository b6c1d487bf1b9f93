"""Edge circuits: selection (top-n, greedy), pruning, and faithfulness curves scored as MIB does.

Works on an `EdgeGraph` and `EdgeScores` from `interp.analyses.edges` (any object with `.nodes`,
`.edges` and `.edge_name(i)` will do for the graph); the model is only touched through the
evaluator (`interp.analyses.edges.evaluate_circuits` unless another is passed).

Sign convention of the scores (edges.py): score ~ m(edge patched to corrupt) - m(clean), so an
edge the task needs has a negative score. Selection ranks edges by a *key*:
  absolute=True  -> |score|            (MIB's `absolute=True`)
  absolute=False -> -score             (MIB's signed selection keeps the largest scores of the
                                        loss -m; ours keeps the edges whose corruption lowers m
                                        most: the same edges)
Ties go to the lower edge index (a stable sort).

Selection, as hannamw/EAP-IG `src/eap/graph.py` (`apply_topn`, `apply_greedy`, `prune`) does it:
  top-n: the n edges with the largest key.
  greedy: start from the logits; repeatedly take the candidate edge with the largest key, where
    the candidates are the edges whose receiver is already in the circuit; when its sender is new,
    the sender's own incoming edges become candidates. Stops after n edges (or when no candidate
    is left).
  prune: repeat until nothing changes: a node stays only if it has a kept incoming edge (the
    input always counts as having one) and a kept outgoing edge (the logits always count); an edge
    stays only if both its ends stay. On a DAG that fixpoint is exactly "the kept edges that lie on
    a kept path from the input to the logits", which is what `prune` computes (reachability
    forwards from the input and backwards from the logits). A head is one node for this purpose:
    an edge into its q, k or v input reaches it.

Faithfulness, as hannamw/MIB-circuit-track `MIB_circuit_track/evaluation.py`
(`evaluate_area_under_curve`) defines it: for each edge fraction p (default 0.001 ... 1.0) the
circuit has int(p * n_edges) edges before pruning; f(p) = (m(C) - m(empty)) / (m(N) - m(empty)),
with m(N) the full model and m(empty) the circuit with no edge. CPR (`area_under`) and CMD
(`area_from_1`) are trapezoid areas over x = the fractions themselves (linear scale, not
percent, not log: `log_scale=False` is the default there), between the first and the last
fraction (so 0.001 -> 1.0, width 0.999):
  CPR = sum_i (x_{i+1} - x_i) * (f_i + f_{i+1}) / 2
  CMD = sum_i (x_{i+1} - x_i) * (|1 - f_i| + |1 - f_{i+1}|) / 2
MIB's leaderboard (`print_results.py`) takes CPR from the signed selection and CMD from the
absolute one when both exist; `faithfulness_curve` computes both areas for the selection asked.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.analyses.attribution import rank_agreement
from interp.core.errors import InterpError
from interp.core.types import Head

__all__ = [
    "FRACTIONS", "ABLATIONS", "SELECTIONS", "GraphLike", "check_fractions", "selection_key", "select_topn",
    "select_greedy", "prune", "select", "circuit_masks", "circuit_frame", "areas", "FaithfulnessCurve",
    "faithfulness_curve", "faithfulness_curves", "random_scores", "edge_agreement", "circuit_heads", "head_tables",
]

FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ABLATIONS = ("patching", "mean")
SELECTIONS = ("topn", "greedy")

EdgeMask = Bool[Tensor, " edge"]
CircuitMasks = Bool[Tensor, "circuit edge"]
EdgeValues = Float[Tensor, " edge"]


class GraphLike(Protocol):
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]

    def edge_name(self, i: int) -> str: ...


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """The fractions, sorted and unique; each must be in (0, 1]."""
    out = []
    for p in fractions:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise InterpError(f"edge fraction {p!r} is outside (0, 1]: each fraction must be a number in (0, 1]")
        out.append(float(p))
    if len(out) < 2:
        raise InterpError(f"need at least 2 edge fractions for an area, got {len(out)}")
    return tuple(sorted(set(out)))


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise InterpError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def selection_key(scores: EdgeValues, absolute: bool = True) -> EdgeValues:
    """What selection ranks by (larger = taken first): |score|, or -score (see the module doc).
    NaN scores (unscored edges) rank last."""
    key = scores.abs() if absolute else -scores
    return torch.nan_to_num(key.double(), nan=-math.inf)


def _order(key: Tensor) -> Tensor:
    return torch.sort(-key, stable=True).indices  # descending key, ties by edge index


def select_topn(graph: GraphLike, scores: EdgeValues, n: int, *, absolute: bool = True,
                prune_nodes: bool = True) -> EdgeMask:
    """The n edges with the largest key (then pruned)."""
    if not 0 <= n <= len(graph.edges):
        raise InterpError(f"n = {n} edges requested; the graph has {len(graph.edges)}")
    keep = torch.zeros(len(graph.edges), dtype=torch.bool)
    keep[_order(selection_key(scores, absolute))[:n]] = True
    return prune(graph, keep) if prune_nodes else keep


def select_greedy(graph: GraphLike, scores: EdgeValues, n: int, *, absolute: bool = True,
                  prune_nodes: bool = True) -> EdgeMask:
    """MIB's greedy selection from the logits (see the module doc), then pruned."""
    if not 0 <= n <= len(graph.edges):
        raise InterpError(f"n = {n} edges requested; the graph has {len(graph.edges)}")
    key = selection_key(scores, absolute).tolist()
    into: dict[str, list[int]] = {}
    for i, (_, receiver, _) in enumerate(graph.edges):
        into.setdefault(receiver, []).append(i)
    heap = [(-key[i], i) for i in into.get("logits", [])]
    heapq.heapify(heap)
    in_circuit = {"logits"}
    keep = torch.zeros(len(graph.edges), dtype=torch.bool)
    for _ in range(n):
        if not heap:
            break
        _, i = heapq.heappop(heap)
        keep[i] = True
        sender = graph.edges[i][0]
        if sender not in in_circuit:
            in_circuit.add(sender)
            for j in into.get(sender, []):
                heapq.heappush(heap, (-key[j], j))
    return prune(graph, keep) if prune_nodes else keep


def _node_index(graph: GraphLike) -> tuple[Tensor, Tensor, int, int]:
    pos = {name: i for i, name in enumerate(graph.nodes)}
    senders = torch.tensor([pos[s] for s, _, _ in graph.edges], dtype=torch.long)
    receivers = torch.tensor([pos[r] for _, r, _ in graph.edges], dtype=torch.long)
    return senders, receivers, pos["input"], pos["logits"]


def _reach(start: int, src: Tensor, dst: Tensor, keep: Tensor, n_nodes: int) -> Tensor:
    reached = torch.zeros(n_nodes, dtype=torch.bool)
    reached[start] = True
    while True:
        new = reached.clone()
        new[dst[keep & reached[src]]] = True
        if torch.equal(new, reached):
            return reached
        reached = new


def prune(graph: GraphLike, keep: EdgeMask) -> EdgeMask:
    """The kept edges that lie on a kept path from the input to the logits (MIB's prune)."""
    if keep.shape != (len(graph.edges),):
        raise InterpError(f"mask of shape {tuple(keep.shape)} for a graph of {len(graph.edges)} edges")
    senders, receivers, inp, logits = _node_index(graph)
    n = len(graph.nodes)
    from_input = _reach(inp, senders, receivers, keep, n)
    to_logits = _reach(logits, receivers, senders, keep, n)
    return keep & from_input[senders] & to_logits[receivers]


def select(graph: GraphLike, scores: EdgeValues, n: int, *, selection: str = "topn",
           absolute: bool = True) -> EdgeMask:
    _check_choice(selection, SELECTIONS, "selection")
    fn = select_topn if selection == "topn" else select_greedy
    return fn(graph, scores, n, absolute=absolute)


def circuit_masks(graph: GraphLike, scores: EdgeValues, fractions: Sequence[float] = FRACTIONS, *,
                  selection: str = "topn", absolute: bool = True) -> tuple[CircuitMasks, list[int]]:
    """One pruned circuit per fraction (int(p * n_edges) edges asked, as MIB) and the counts asked."""
    fractions = check_fractions(fractions)
    counts = [int(p * len(graph.edges)) for p in fractions]
    masks = torch.stack([select(graph, scores, k, selection=selection, absolute=absolute) for k in counts])
    return masks, counts


def circuit_frame(graph: GraphLike, scores: EdgeValues, keep: EdgeMask) -> pd.DataFrame:
    """The circuit as a tidy table, one row per edge: sender, receiver, input, edge (MIB's name),
    score, in_circuit; sorted by |score|, largest first."""
    df = pd.DataFrame(list(graph.edges), columns=["sender", "receiver", "input"])
    df["edge"] = [graph.edge_name(i) for i in range(len(graph.edges))]
    df["score"] = scores.double().numpy()
    df["in_circuit"] = keep.numpy()
    order = np.argsort(-np.nan_to_num(np.abs(df["score"].to_numpy()), nan=-np.inf), kind="stable")
    return df.iloc[order].reset_index(drop=True)


def areas(fractions: Sequence[float], f: Sequence[float]) -> tuple[float, float]:
    """(CPR, CMD): MIB's trapezoid areas under f and between f and 1 over x = the fractions."""
    if len(fractions) != len(f) or len(f) < 2:
        raise InterpError(f"{len(fractions)} fractions for {len(f)} faithfulness values (need >= 2, equal)")
    cpr = cmd = 0.0
    for i in range(len(f) - 1):
        dx = fractions[i + 1] - fractions[i]
        cpr += dx * (f[i] + f[i + 1]) / 2
        cmd += dx * (abs(1.0 - f[i]) + abs(1.0 - f[i + 1])) / 2
    return cpr, cmd


@dataclass
class FaithfulnessCurve:
    """f at each edge fraction for one method's scores; `cpr` and `cmd` as MIB computes them."""

    method: str
    selection: str
    absolute: bool
    ablation: str
    fractions: tuple[float, ...]
    n_edges_asked: list[int]
    n_edges_kept: list[int]
    metrics: list[float]  # m(C) per fraction
    clean_metric: float  # m(N): every edge kept
    corrupt_metric: float  # m(empty): no edge kept
    n_edges: int
    faithfulness: list[float] = field(init=False)
    cpr: float = field(init=False)
    cmd: float = field(init=False)

    def __post_init__(self) -> None:
        denom = self.clean_metric - self.corrupt_metric
        if denom == 0 or not math.isfinite(denom):
            raise InterpError(f"m(full) - m(empty) = {denom}: the clean and corrupt runs do not differ on the "
                              "metric, so faithfulness is undefined (choose pairs the model separates)")
        self.faithfulness = [(m - self.corrupt_metric) / denom for m in self.metrics]
        self.cpr, self.cmd = areas(self.fractions, self.faithfulness)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "method": self.method, "selection": self.selection, "absolute": self.absolute,
            "ablation": self.ablation, "fraction": list(self.fractions), "n_edges_asked": self.n_edges_asked,
            "n_edges_kept": self.n_edges_kept, "metric": self.metrics, "faithfulness": self.faithfulness,
            "clean_metric": self.clean_metric, "corrupt_metric": self.corrupt_metric, "n_edges": self.n_edges,
        })

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "selection": self.selection, "absolute": self.absolute,
                "ablation": self.ablation, "cpr": self.cpr, "cmd": self.cmd, "n_edges": self.n_edges,
                "clean_metric": self.clean_metric, "corrupt_metric": self.corrupt_metric}


Evaluator = Callable[..., Tensor]


def faithfulness_curves(model: Any, pairs: Any, graph: GraphLike, scores: dict[str, EdgeValues], *,
                        absolute: Sequence[bool] | dict[str, Sequence[bool]] = (True,),
                        fractions: Sequence[float] = FRACTIONS,
                        selection: str = "topn", ablation: str = "patching", metric: str = "logit_diff",
                        batch_size: int = 64, progress: Any = None,
                        evaluate: Evaluator | None = None) -> list[FaithfulnessCurve]:
    """One curve per (method, absolute) (`absolute`: the selections of every method, or per
    method): the circuits of every curve, the full model and the empty circuit evaluated in one
    call of `evaluate` (default
    `interp.analyses.edges.evaluate_circuits`), each distinct circuit once (e.g. the 100% circuit
    is the full model; pruning often empties the smallest ones)."""
    _check_choice(ablation, ABLATIONS, "ablation")
    fractions = check_fractions(fractions)
    n = len(graph.edges)
    keys = [(m, bool(a)) for m in scores for a in (absolute[m] if isinstance(absolute, dict) else absolute)]
    built = [circuit_masks(graph, scores[m], fractions, selection=selection, absolute=a) for m, a in keys]
    every = torch.ones(1, n, dtype=torch.bool)
    stacked = torch.cat([every, ~every, *[masks for masks, _ in built]])
    unique, inverse = np.unique(stacked.numpy(), axis=0, return_inverse=True)
    if evaluate is None:
        from interp.analyses.edges import evaluate_circuits as evaluate
    values = evaluate(model, pairs, graph, torch.from_numpy(unique), ablation=ablation, metric=metric,
                      batch_size=batch_size, progress=progress)
    per_row = [float(values[i]) for i in inverse.reshape(-1)]
    clean, corrupt, rest = per_row[0], per_row[1], per_row[2:]
    k = len(fractions)
    return [FaithfulnessCurve(m, selection, a, ablation, fractions, counts, [int(x.sum()) for x in masks],
                              rest[j * k:(j + 1) * k], clean, corrupt, n)
            for j, ((m, a), (masks, counts)) in enumerate(zip(keys, built, strict=True))]


def faithfulness_curve(model: Any, pairs: Any, graph: GraphLike, scores: EdgeValues, *, method: str,
                       fractions: Sequence[float] = FRACTIONS, selection: str = "topn", absolute: bool = True,
                       ablation: str = "patching", metric: str = "logit_diff", batch_size: int = 64,
                       progress: Any = None, evaluate: Evaluator | None = None) -> FaithfulnessCurve:
    """`faithfulness_curves` for one method and one selection."""
    return faithfulness_curves(model, pairs, graph, {method: scores}, absolute=(absolute,), fractions=fractions,
                               selection=selection, ablation=ablation, metric=metric, batch_size=batch_size,
                               progress=progress, evaluate=evaluate)[0]


def random_scores(n_edges: int, seed: int = 0) -> EdgeValues:
    """The random baseline's scores: standard normal, one per edge, from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_edges, generator=gen)


def edge_agreement(estimate: EdgeValues, exact: EdgeValues, edges: Sequence[int] | None = None,
                   k: int = 10) -> dict[str, float]:
    """Spearman / Pearson and top-k overlap (by |score|) between two edge score vectors over
    `edges` (default: the edges where `exact` is not NaN), via attribution's `rank_agreement`."""
    if estimate.shape != exact.shape:
        raise InterpError(f"score vectors differ in length: {tuple(estimate.shape)} vs {tuple(exact.shape)}")
    idx = torch.as_tensor(list(edges)) if edges is not None else torch.nonzero(~exact.isnan()).flatten()
    if len(idx) < 2:
        raise InterpError(f"agreement needs at least 2 edges, got {len(idx)}")
    return rank_agreement(estimate[idx].double().numpy(), exact[idx].double().numpy(), k=min(k, len(idx)))


def circuit_heads(graph: GraphLike, keep: EdgeMask) -> set[Head]:
    """The (layer, head) of every attention head that is an end of a kept edge."""
    heads = {_head(node) for i in torch.nonzero(keep).flatten().tolist() for node in graph.edges[i][:2]}
    return {h for h in heads if h is not None}


def _head(node: str) -> Head | None:
    if node.startswith("a") and ".h" in node:
        layer, head = node[1:].split(".h")
        return int(layer), int(head)
    return None


def head_tables(circuit: pd.DataFrame, classes: dict[Head, str] | None = None,
                default_class: str = "edge circuit") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The circuit's heads in the format of `interp.io.circuit_tables` (circuit_nodes:
    layer, head, class, score; circuit_edges: sender_layer, sender_head, receiver_layer,
    receiver_head, receiver_input, strength), so the app's circuit pages show it and compare
    it with a path-patching circuit. `circuit`: `circuit_frame`'s table; only in_circuit rows
    count. Nodes: every head at an end of a kept edge, `score` the sum of its kept outgoing
    edges' scores, `class` from `classes` (e.g. the IOI circuit's) or `default_class`. Edges:
    kept head -> head (receiver input q/k/v) and head -> logits (input "logits") edges; edges
    from the input embedding or through MLPs have no place in a head graph and are left out."""
    kept = circuit[circuit["in_circuit"]]
    classes = classes or {}
    heads: dict[Head, float] = {}
    rows = []
    for e in kept.itertuples(index=False):
        s, r = _head(e.sender), _head(e.receiver)
        for h in (s, r):
            if h is not None:
                heads.setdefault(h, 0.0)
        if s is not None:
            heads[s] += float(e.score)
            if r is not None or e.receiver == "logits":
                rows.append({"sender_layer": s[0], "sender_head": s[1],
                             "receiver_layer": r[0] if r else pd.NA, "receiver_head": r[1] if r else pd.NA,
                             "receiver_input": e.input if r else "logits", "strength": float(e.score)})
    nodes = pd.DataFrame([{"layer": h[0], "head": h[1], "class": classes.get(h, default_class), "score": v}
                          for h, v in sorted(heads.items())], columns=["layer", "head", "class", "score"])
    edges = pd.DataFrame(rows, columns=["sender_layer", "sender_head", "receiver_layer", "receiver_head",
                                        "receiver_input", "strength"])
    for c in ("receiver_layer", "receiver_head"):
        edges[c] = edges[c].astype("Int64")
    return nodes, edges
