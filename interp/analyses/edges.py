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
- ``"eap-ig-activations"``: for each node group (input, each layer's attention, each MLP) and
  k = 1..m, that group's output set to a_corrupt + (k / m)(a_clean - a_corrupt) (the clean end
  included, the corrupt end not), the rest recomputed on the clean prompt; the gradients of all
  (3L... ) runs averaged, as the reference code does (every run's gradient counts for every edge).

    edge_graph(model)
    res = edge_scores(model, pairs, method="eap-ig-inputs", steps=5)
    res.to_frame().sort_values("score")
    m = evaluate_circuits(model, pairs, graph, keep)      # (circuit,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.edges_graph import KINDS, PROVEN, EdgeGraph, Layout, build_graph, edge_graph
from interp.analyses.sweep import ProgressFn
from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.types import Float, Tensor
from interp.data.pairs import TokenizedPairs

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
                progress: ProgressFn | None = None) -> EdgeScores:
    """A score per edge of `edge_graph(model)` (see the module docstring for the methods and the
    sign convention); `edges` (exact only) restricts the computation to a subset, the rest NaN."""
    _check_args(method, steps, pairs)
    edge_graph(model)
    if edges is not None and method != "exact":
        raise InterpError(f"edges= selects a subset for method 'exact' only; {method} scores every edge at once")
    raise NotImplementedError("not done yet")


def evaluate_circuits(model: HookedModel, pairs: TokenizedPairs, graph: EdgeGraph,
                      keep: torch.Tensor, *, ablation: str = "patching", metric: str = "logit_diff",
                      batch_size: int = 64, progress: ProgressFn | None = None) -> Float[Tensor, " circuit"]:
    """The mean metric over prompts of each circuit (a row of `keep`, (circuit, edge) bool): every
    edge not kept is ablated at once - its sender's contribution to its receiver's input takes the
    corrupt run's value ("patching") or the sender's mean over the clean prompts ("mean") - and the
    rest of the model is recomputed on the clean input. All-True rows give the clean metric,
    all-False rows the corrupt one (with "patching")."""
    raise NotImplementedError("not done yet")
