"""Edge-level circuits: edge attribution patching (EAP, EAP-IG), exact edge patching and the
evaluation of circuits with every edge outside them ablated (Syed et al. 2023; Hanna et al.
2024, arXiv 2403.17806; MIB, Mueller et al. 2025, arXiv 2504.13151).

The graph (`edge_graph`, `interp.analyses.edges_graph`): nodes input, heads, MLPs, logits;
receivers each head's q, k and v input, each MLP's input and the logits' input. Everything runs
through one implementation of "the input of receiver r with some senders' contributions swapped"
(`interp.analyses.edges_run`): a receiver's input is the residual stream entering it, the sum of
its upstream senders' outputs (+ constant biases); swapping sender s in receiver r gives
input_r + (a_s,src - a_s,current) for that receiver only. Head receivers see their input through
the model's own block (its norm, projections, rotary, attention function): the block is run on
the swapped residual and the head's own query / key / value is taken from that run (under
grouped-query attention one query head's view of its KV group, as path patching does).

Sign convention of every score: score(s -> r) ~ m(that edge patched to corrupt) - m(clean).
- ``"exact"``: m(clean run with s's contribution to r's input swapped to its corrupt value, the
  rest of the model recomputed) - m(clean), averaged over prompts.
- ``"eap"``: (a_s,corrupt - a_s,clean) . dm/d(input_r) on the clean run, summed over positions.
- ``"eap-ig-inputs"``: the same difference dotted with the gradient averaged over the `steps`
  points x_k = e_corrupt + (k / m)(e_clean - e_corrupt), k = 0..m-1 (EAP-IG's reference code:
  the corrupt end included, the clean end not), e the input embeddings (the residual entering
  block 0), all other inputs of the forward (positions) the clean prompt's.
- ``"eap-ig-activations"``: for each node group (input, each layer's attention - all its heads -,
  each MLP) and k = 1..m, that group's output set to a_corrupt + (k / m)(a_clean - a_corrupt)
  (the clean end included, the corrupt end not), the rest recomputed on the clean prompt; the
  gradients of all (2L + 1) m runs averaged, as the reference code does (every run's gradient
  counts for every edge). Costly: (2L + 1) m forward + backward passes.

Cost (`benchmarks/edge_attribution.py`: SmolLM2-135M, 10 IOI prompts of 15 tokens, 2 CPU threads,
time / a plain forward of the batch timed just before, median of 5): EAP 5.5 (the corrupt
forward, the clean forward with its backward, the per-head pull-backs and the sender x receiver
contraction); EAP-IG-inputs with m = 5: 16.1 (target 3m + 3 = 18), 20 rows per gradient forward;
exact: 0.02 per edge into the logits. EAP misses its target of 3.5: on this CPU the two forwards
and one backward alone cost 2.4 and the contraction (every edge's sum over prompts, positions
and d_model) 0.8, which leaves 0.3 for separating 810 head receivers' gradients; the batched
vector-Jacobian product through the norm (3H cotangents per layer, memory-bound) costs more.

    graph = edge_graph(model)
    res = edge_scores(model, pairs, method="eap-ig-inputs", steps=5)
    res.to_frame().sort_values("score")
    m = evaluate_circuits(model, pairs, graph, keep)      # (circuit,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.edges_grad import eap_batch, ig_activations_batch, ig_inputs_batch
from interp.analyses.edges_graph import KINDS, PROVEN, EdgeGraph, Layout, build_graph, edge_graph
from interp.analyses.edges_run import PairRuns, exact_sweep, run_mixed, sender_outputs
from interp.analyses.patching import baseline_metrics, pair_readout
from interp.analyses.sweep import ProgressFn, check_batch_size, over_batches, prompt_mean
from interp.core.errors import InterpError
from interp.core.metrics import Metric, get_metric
from interp.core.model import HookedModel
from interp.core.types import Float, Tensor
from interp.data.pairs import PairBatch, TokenizedPairs

METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "exact")
ABLATIONS = ("patching", "mean")

__all__ = ["ABLATIONS", "KINDS", "METHODS", "PROVEN", "EdgeGraph", "EdgeScores", "Layout", "build_graph",
           "edge_graph", "edge_scores", "evaluate_circuits"]


@dataclass
class EdgeScores:
    graph: EdgeGraph
    scores: Float[Tensor, " edge"]
    method: str
    steps: int | None
    n_prompts: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy: sender, receiver, input, edge, score (one row per edge)."""
        s, r, k = zip(*self.graph.edges, strict=True) if self.graph.edges else ((), (), ())
        return pd.DataFrame({"sender": s, "receiver": r, "input": k,
                             "edge": [self.graph.edge_name(i) for i in range(len(self.graph))],
                             "score": self.scores.detach().float().cpu().numpy()})


def _check_args(method: str, steps: int, pairs: TokenizedPairs) -> None:
    if method not in METHODS:
        raise InterpError(f"unknown edge attribution method {method!r}; allowed: {', '.join(METHODS)}")
    if method.startswith("eap-ig") and steps < 1:
        raise InterpError(f"steps must be >= 1 for {method}, got {steps}")
    if not pairs.batches or pairs.n == 0:
        raise InterpError("edge attribution needs at least one prompt pair; the dataset is empty")
    for pb in pairs.batches:
        n = len(pb)
        for what, ids in (("answer", pb.answer_ids), ("distractor", pb.distractor_ids)):
            if ids.ndim != 1 or ids.shape[0] != n:
                raise InterpError(f"each prompt needs exactly one {what} token id; got {what} ids of shape "
                                  f"{tuple(ids.shape)} for {n} prompts (answers must be single tokens)")


def edge_scores(model: HookedModel, pairs: TokenizedPairs, *, method: str = "eap-ig-inputs", steps: int = 5,
                metric: str = "logit_diff", edges: Sequence[int] | None = None, batch_size: int = 64,
                grad_batch_size: int = 20, progress: ProgressFn | None = None) -> EdgeScores:
    """A score per edge of `edge_graph(model)` (see the module docstring for the methods and the
    sign convention); `edges` (exact only) restricts the computation to a subset, the rest NaN.
    `batch_size`: exact, rows (edge variants x prompts) per forward. `grad_batch_size`: gradient
    methods, rows (EAP-IG points x prompts, at least one point) per forward with its backward;
    kept small because the backward holds every activation and the per-head pull-back is
    memory-bound (on a 2-core CPU, 20 rows beat 10 and 50: benchmarks/edge_attribution.py)."""
    _check_args(method, steps, pairs)
    check_batch_size(batch_size)
    check_batch_size(grad_batch_size, name="grad_batch_size", auto=False)
    m = get_metric(metric)
    graph = edge_graph(model)
    lay = graph.layout
    if edges is not None and method != "exact":
        raise InterpError(f"edges= selects a subset for method 'exact' only; {method} scores every edge at once")
    batches = pairs.by_length().batches
    if method == "exact":
        scores = _exact(model, batches, graph, m, edges, batch_size, progress)
        return EdgeScores(graph, scores, method, None, sum(len(b) for b in batches))
    total = torch.zeros(len(graph))
    n_total = 0
    for i, pb in enumerate(batches):
        per_forward = max(1, grad_batch_size // len(pb))
        if method == "eap":
            total += eap_batch(model, pb, lay, m)
        elif method == "eap-ig-inputs":
            total += ig_inputs_batch(model, pb, lay, m, steps, per_forward)
        else:
            total += ig_activations_batch(model, pb, lay, m, steps, per_forward)
        n_total += len(pb)
        if progress:
            progress(i + 1, len(batches))
    return EdgeScores(graph, total / n_total, method, None if method == "eap" else steps, n_total)


def _edge_ends(graph: EdgeGraph) -> list[tuple[int, int]]:
    """(sender index, receiver index) of every edge, in graph order."""
    return [(s, r) for r, (_, k) in enumerate(graph.receiver_spans()) for s in range(k)]


def _exact(model: HookedModel, batches: list[PairBatch], graph: EdgeGraph, m: Metric, edges: Sequence[int] | None,
           batch_size: int, progress: ProgressFn | None) -> Float[Tensor, " edge"]:
    ends = _edge_ends(graph)
    chosen = list(range(len(graph))) if edges is None else list(edges)
    bad = [e for e in chosen if not 0 <= e < len(graph)]
    if bad:
        raise InterpError(f"edge index {bad[0]} out of range 0..{len(graph) - 1}")
    pairs_of = [ends[e] for e in chosen]

    def per_batch(pb: PairBatch, prog: ProgressFn) -> tuple[Tensor, Tensor, Tensor]:
        vals = exact_sweep(model, pb, graph.layout, pairs_of, m, batch_size=batch_size, progress=prog)
        return (vals, *baseline_metrics(model, pb, m))

    vals, clean, _corrupt, _n = prompt_mean(over_batches(batches, per_batch, len(chosen), progress))
    out = torch.full((len(graph),), float("nan"))
    out[torch.tensor(chosen, dtype=torch.long)] = vals.float() - clean
    return out


def evaluate_circuits(model: HookedModel, pairs: TokenizedPairs, graph: EdgeGraph,
                      keep: torch.Tensor, *, ablation: str = "patching", metric: str = "logit_diff",
                      batch_size: int = 64, progress: ProgressFn | None = None) -> Float[Tensor, " circuit"]:
    """The mean metric over prompts of each circuit (a row of `keep`, (circuit, edge) bool): every
    edge not kept is ablated at once - its sender's contribution to its receiver's input takes the
    corrupt run's value ("patching") or the sender's mean over the clean prompts ("mean": per
    prompt averaged over positions, then over every prompt of the dataset) - and the rest of the
    model is recomputed on the clean input. All-True rows give the clean metric, all-False rows
    the corrupt one (with "patching"). `batch_size`: circuits x prompts per forward (at least one
    circuit)."""
    if ablation not in ABLATIONS:
        raise InterpError(f"unknown ablation {ablation!r}; allowed: {', '.join(ABLATIONS)}")
    _check_args("exact", 1, pairs)
    check_batch_size(batch_size)
    m = get_metric(metric)
    if graph != edge_graph(model):
        raise InterpError("the graph is not this model's edge graph (edge_graph(model))")
    keep = torch.as_tensor(keep)
    if keep.ndim != 2 or keep.shape[1] != len(graph) or keep.dtype != torch.bool:
        raise InterpError(f"keep must be a bool tensor (circuit, edge) with {len(graph)} edges; got "
                          f"{keep.dtype} of shape {tuple(keep.shape)}")
    batches = pairs.by_length().batches
    mean = _mean_senders(model, batches) if ablation == "mean" else None
    ablate = _ablation_matrix(graph, keep)
    sums = torch.zeros(keep.shape[0])
    done = 0
    for pb in batches:
        per_forward = max(1, batch_size // len(pb))
        for chunk in range(0, keep.shape[0], per_forward):
            c = slice(chunk, min(keep.shape[0], chunk + per_forward))
            sums[c] += circuit_metrics(model, pb, graph.layout, ablate[c], m, mean).sum(1)
            done += c.stop - c.start
            if progress:
                progress(done, keep.shape[0] * len(batches))
    return sums / sum(len(b) for b in batches)


def _ablation_matrix(graph: EdgeGraph, keep: torch.Tensor) -> Float[Tensor, "circuit receiver sender"]:
    lay = graph.layout
    out = torch.zeros(keep.shape[0], lay.n_receivers, lay.n_senders)
    for r, (first, k) in enumerate(graph.receiver_spans()):
        out[:, r, :k] = (~keep[:, first:first + k]).float()
    return out


@torch.no_grad()
def _mean_senders(model: HookedModel, batches: list[PairBatch]) -> Float[Tensor, "sender d_model"]:
    total, n = None, 0
    for pb in batches:
        a, _ = sender_outputs(model, pb.clean)
        s = a.float().mean(2).sum(1)  # per prompt over positions, summed over prompts
        total = s if total is None else total + s
        n += len(pb)
    assert total is not None
    return total / n


@torch.no_grad()
def circuit_metrics(model: HookedModel, pb: PairBatch, lay: Layout, ablate: Tensor, m: Metric,
                    mean: Tensor | None = None) -> Float[Tensor, "circuit prompt"]:
    """Per-prompt metric of each circuit (rows of `ablate`, (circuit, receiver, sender) 0/1)."""
    runs = PairRuns.of(model, pb)
    C, n = ablate.shape[0], len(pb)
    src = runs.corrupt if mean is None else mean.to(runs.clean)[:, None, None].expand_as(runs.clean).contiguous()
    x0 = runs.inputs.resid_pre[0].repeat(C, 1, 1)
    final = run_mixed(model, runs.inputs, lay, C, x0, src=src, ablate=ablate.to(x0.device))
    rd = pair_readout(model, pb, m)
    return rd.score(model.unembed(final[:, -1], rd.columns), C).view(C, n).float().cpu()  # type: ignore[attr-defined]
