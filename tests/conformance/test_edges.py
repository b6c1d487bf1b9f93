"""Edge patching (`interp.analyses.edges`) against the raw computation in edges_reference.py:
one sender's contribution swapped into one receiver's input (the logits, an MLP, a head's q, k
or v; grouped-query receivers isolated per query head), per prompt, to 1e-5. Circuit evaluation
(every swap at once, current sender values) against the same reference: a circuit missing one
edge is that edge's patch; all edges give the clean metric, none the corrupt one. Families with
norms after the sublayers refuse, naming why."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.edges import circuit_metrics, edge_graph, edge_scores
from interp.analyses.edges_graph import Layout
from interp.analyses.edges_run import exact_sweep
from interp.analyses.patching import baseline_metrics
from interp.core.errors import UnsupportedError
from interp.core.metrics import get_metric

from .edges_reference import edge_patch, senders
from .support import check, refused_or

EDGES = {  # receiver kind -> [(sender, receiver)] in the reference's notation
    "logits": [(("head", 1, 2), ("logits",)), (("mlp", 0), ("logits",)), (("head", 2, 3), ("logits",))],
    "mlp": [(("head", 1, 0), ("mlp", 1)), (("input",), ("mlp", 2)), (("head", 0, 3), ("mlp", 0))],
    "q": [(("head", 0, 3), ("q", 2, 1)), (("mlp", 1), ("q", 2, 0))],
    "k": [(("mlp", 0), ("k", 1, 1)), (("input",), ("k", 2, 2))],  # head 1 shares its KV group with head 0
    "v": [(("head", 0, 1), ("v", 2, 2)), (("mlp", 0), ("v", 1, 3))],
}
POST_NORM = {"gemma2", "gemma3_text", "olmo2"}


def _sender(lay: Layout, s: tuple) -> int:
    return 0 if s[0] == "input" else lay.head_sender(s[1], s[2]) if s[0] == "head" else lay.mlp_sender(s[1])


def _receiver(lay: Layout, r: tuple) -> int:
    if r[0] == "logits":
        return lay.logits_receiver
    return lay.mlp_receiver(r[1]) if r[0] == "mlp" else lay.head_receiver(r[1], r[2], r[0])


@pytest.mark.parametrize("receiver", list(EDGES))
def test_exact_edge_patching(family, model, raw, pb, receiver):
    graph = refused_or(edge_graph, model)
    lay = graph.layout
    edges = EDGES[receiver]
    ours = refused_or(exact_sweep, model, pb, lay, [(_sender(lay, s), _receiver(lay, r)) for s, r in edges],
                      get_metric("logit_diff"), batch_size=2)
    cs, xs = senders(raw, pb.clean), senders(raw, pb.corrupt)
    clean = raw.ld(pb.clean, pb.answer_ids, pb.distractor_ids)
    moved = 0.0
    for i, (s, r) in enumerate(edges):
        ref = edge_patch(raw, pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids, s, r, cs, xs)
        check(ours[i], ref, f"{family} edge {s} -> {r}", atol=1e-5, rtol=1e-4)
        moved = max(moved, float((ref - clean).abs().max()))
    assert moved > 1e-4, f"{family}: no edge into {receiver} changed the metric; the check is vacuous"


def test_circuit_evaluation(family, model, raw, pb):
    """Rows: all edges, no edge, and all but one edge (one per receiver kind)."""
    graph = refused_or(edge_graph, model)
    lay = graph.layout
    picks = [EDGES[k][0] for k in EDGES]
    keep = torch.ones(2 + len(picks), len(graph), dtype=torch.bool)
    keep[1] = False
    spans = graph.receiver_spans()
    for c, (s, r) in enumerate(picks):
        first, _ = spans[_receiver(lay, r)]
        keep[2 + c, first + _sender(lay, s)] = False
    ablate = torch.zeros(keep.shape[0], lay.n_receivers, lay.n_senders)
    for r, (first, k) in enumerate(spans):
        ablate[:, r, :k] = (~keep[:, first:first + k]).float()
    m = get_metric("logit_diff")
    ours = refused_or(circuit_metrics, model, pb, lay, ablate, m)
    clean, corrupt = baseline_metrics(model, pb, m)
    check(ours[0], clean, f"{family} circuit of all edges = clean metric", atol=1e-5)
    check(ours[1], corrupt, f"{family} empty circuit = corrupt metric", atol=1e-5)
    cs, xs = senders(raw, pb.clean), senders(raw, pb.corrupt)
    for c, (s, r) in enumerate(picks):
        ref = edge_patch(raw, pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids, s, r, cs, xs)
        check(ours[2 + c], ref, f"{family} circuit without edge {s} -> {r}", atol=1e-5, rtol=1e-4)


def test_eap_is_the_derivative_of_edge_patching(family, model, vocab, pairs, pb):
    """EAP's score of an edge is the derivative of the raw edge patch along (a_corrupt - a_clean):
    central finite differences on the raw model (the swap scaled by +-eps and +-2 eps, Richardson
    extrapolated), in float64 where the family runs in it (HF's RMSNorms still compute in float32,
    hence eps 0.05; the mixture-of-experts kernels take no float64: float32 there, eps 0.01 so the
    expert routing does not switch, a looser tolerance)."""
    from interp.models.zoo import build_family

    from .reference import RawModel

    graph = refused_or(edge_graph, model)
    lay, spans = graph.layout, graph.receiver_spans()
    eap = refused_or(edge_scores, model, pairs, method="eap")
    # The first call checks, per layer and kind, that each head's own gradient is its slot of
    # the projection output's (one product per head); later calls use that slot directly.
    from interp.analyses.edges_grad import _PER_HEAD

    assert _PER_HEAD.get(model) == {(layer, kind) for layer in range(lay.n_layers) for kind in "qkv"}
    again = edge_scores(model, pairs, method="eap")
    check(again.scores, eap.scores, f"{family} EAP by head slots vs per head", atol=1e-6, rtol=1e-5)
    wide = family in ("mixtral", "qwen2_moe")
    hf = build_family(family, vocab_size=vocab, seed=0)
    raw = RawModel(family, hf if wide else hf.double())
    cs, xs = senders(raw, pb.clean), senders(raw, pb.corrupt)
    eps = 0.01 if wide else 0.05  # small enough for expert routing not to switch, else above float32 noise

    def fd(s, r, eps):
        args = (raw, pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids, s, r, cs)
        up, down = ({k: cs[k] + sign * eps * (xs[k] - cs[k]) for k in cs} for sign in (1, -1))
        return ((edge_patch(*args, up).double() - edge_patch(*args, down).double()) / (2 * eps)).mean()

    for edges in EDGES.values():
        for s, r in edges:
            ref = (4 * fd(s, r, eps) - fd(s, r, 2 * eps)) / 3
            ours = eap.scores[spans[_receiver(lay, r)][0] + _sender(lay, s)]
            check(ours, ref, f"{family} EAP of edge {s} -> {r}", atol=5e-5 if wide else 2e-5, rtol=1e-3)


def test_post_norm_families_refuse(family, model):
    if family not in POST_NORM:
        pytest.skip(f"{family} has no norm after its sublayers")
    with pytest.raises(UnsupportedError, match="before the residual add"):
        edge_graph(model)
