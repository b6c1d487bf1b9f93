"""Edge circuit selection (top-n, greedy, pruning), MIB's CPR/CMD areas and the faithfulness
curve on hand-made graphs, scores and evaluators (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from interp.analyses.edge_circuits import (
    FRACTIONS,
    areas,
    check_fractions,
    circuit_frame,
    circuit_heads,
    edge_agreement,
    faithfulness_curve,
    faithfulness_curves,
    prune,
    random_scores,
    select_greedy,
    select_topn,
)
from interp.core.errors import InterpError
from tests.analyses.edge_fixtures import toy_graph


def _mask(g, names):
    keep = torch.zeros(len(g.edges), dtype=torch.bool)
    for n in names:
        keep[g.index(n)] = True
    return keep


def _kept(g, keep):
    return {g.edge_name(i) for i in torch.nonzero(keep).flatten().tolist()}


def _scores(g, values):
    s = torch.zeros(len(g.edges))
    for name, v in values.items():
        s[g.index(name)] = v
    return s


# --- areas (MIB's evaluate_area_under_curve, log_scale=False) ---------------------------------

def test_areas_of_constant_one_curve():
    cpr, cmd = areas(FRACTIONS, [1.0] * len(FRACTIONS))
    assert cpr == pytest.approx(0.999, abs=1e-12)  # width of [0.001, 1]
    assert cmd == pytest.approx(0.0, abs=1e-12)


def test_areas_of_linear_curve_are_exact_integrals():
    f = list(FRACTIONS)  # f(x) = x: trapezoids are exact on a line
    cpr, cmd = areas(FRACTIONS, f)
    assert cpr == pytest.approx((1 - 0.001**2) / 2, abs=1e-12)
    assert cmd == pytest.approx(0.999 - (1 - 0.001**2) / 2, abs=1e-12)


def test_areas_cmd_counts_overshoot_as_distance():
    cpr, cmd = areas((0.5, 1.0), [2.0, 0.0])  # |1-2| and |1-0|
    assert cpr == pytest.approx(0.5)
    assert cmd == pytest.approx(0.5)


def test_areas_step_curve():
    cpr, cmd = areas((0.1, 0.2, 1.0), [0.0, 1.0, 1.0])
    assert cpr == pytest.approx(0.05 + 0.8)
    assert cmd == pytest.approx(0.05)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), "0.1", True])
def test_fraction_outside_unit_interval_is_refused(bad):
    with pytest.raises(InterpError, match=r"outside \(0, 1\]"):
        check_fractions([0.1, bad])


def test_fractions_sorted_and_unique():
    assert check_fractions([1.0, 0.1, 0.1]) == (0.1, 1.0)


# --- selection --------------------------------------------------------------------------------

def test_topn_by_abs_and_by_signed_score():
    g = toy_graph()
    s = _scores(g, {"a1.h0->logits": -3.0, "m1->logits": 2.0, "a1.h1->logits": 1.0})
    assert _kept(g, select_topn(g, s, 2, prune_nodes=False)) == {"a1.h0->logits", "m1->logits"}
    # signed: the edges whose corruption lowers the metric most (most negative score) first
    assert _kept(g, select_topn(g, s, 1, absolute=False, prune_nodes=False)) == {"a1.h0->logits"}


def test_prune_removes_dangling_nodes_and_their_edges():
    g = toy_graph()
    keep = _mask(g, ["input->a0.h0<q>", "a0.h0->a1.h0<v>", "a1.h0->logits",  # a path input -> logits
                     "m0->logits",          # m0 has no incoming edge: not reached from the input
                     "input->a0.h1<k>"])    # a0.h1 has no outgoing edge: does not reach the logits
    assert _kept(g, prune(g, keep)) == {"input->a0.h0<q>", "a0.h0->a1.h0<v>", "a1.h0->logits"}


def test_prune_is_iterated_through_chains():
    g = toy_graph()
    # input -> a0.h0 -> m0 -> (nothing): the whole chain goes, not only its last edge
    keep = _mask(g, ["input->a0.h0<q>", "a0.h0->m0", "input->logits"])
    assert _kept(g, prune(g, keep)) == {"input->logits"}


def test_prune_keeps_everything_when_all_edges_kept():
    g = toy_graph()
    keep = torch.ones(len(g.edges), dtype=torch.bool)
    assert prune(g, keep).all()


def test_topn_prunes_by_default():
    g = toy_graph()
    s = _scores(g, {"a0.h0->a1.h1<q>": 10.0, "a1.h0->logits": 1.0})
    # the best edge is dangling (a0.h0 gets nothing from the input, a1.h1 reaches nothing)
    assert _kept(g, select_topn(g, s, 2)) == set()


def test_greedy_grows_from_the_logits():
    g = toy_graph()
    s = _scores(g, {"a0.h0->a1.h1<q>": 10.0, "a1.h0->logits": 1.0, "a0.h1->a1.h0<k>": 0.5,
                    "input->a0.h1<v>": 0.4})
    kept = select_greedy(g, s, 3, prune_nodes=False)
    # a0.h0->a1.h1 has the best score but a1.h1 never joins: greedy takes connected edges only
    assert _kept(g, kept) == {"a1.h0->logits", "a0.h1->a1.h0<k>", "input->a0.h1<v>"}
    assert _kept(g, select_greedy(g, s, 3)) == _kept(g, kept)  # already connected: pruning keeps all


def test_greedy_takes_a_new_senders_inputs_as_candidates():
    g = toy_graph()
    s = _scores(g, {"m1->logits": 5.0, "a1.h1->m1": 4.0, "a0.h0->a1.h1<v>": 3.0, "input->m1": -3.5})
    kept = select_greedy(g, s, 3, prune_nodes=False)
    assert _kept(g, kept) == {"m1->logits", "a1.h1->m1", "input->m1"}  # |-3.5| beats 3.0


def test_too_many_edges_refused():
    g = toy_graph()
    with pytest.raises(InterpError, match="edges requested"):
        select_topn(g, torch.zeros(len(g.edges)), len(g.edges) + 1)


def test_circuit_frame_is_tidy():
    g = toy_graph()
    s = _scores(g, {"a1.h0->logits": -3.0})
    keep = select_topn(g, s, 1, prune_nodes=False)
    df = circuit_frame(g, s, keep)
    assert list(df.columns) == ["sender", "receiver", "input", "edge", "score", "in_circuit"]
    assert len(df) == len(g.edges)
    first = df.iloc[0]
    assert (first.sender, first.receiver, first.input, first.edge, first.score, first.in_circuit) == \
        ("a1.h0", "logits", "", "a1.h0->logits", -3.0, True)
    assert df["in_circuit"].sum() == 1


def test_circuit_heads():
    g = toy_graph()
    keep = _mask(g, ["input->a0.h0<q>", "a0.h0->a1.h1<v>", "m0->logits"])
    assert circuit_heads(g, keep) == {(0, 0), (1, 1)}


# --- faithfulness curve with a hand-made evaluator --------------------------------------------

class _Evaluator:
    """m(C) = corrupt + (clean - corrupt) * (share of kept edges); records its calls."""

    def __init__(self, clean=3.0, corrupt=-1.0):
        self.clean, self.corrupt, self.calls = clean, corrupt, []

    def __call__(self, model, pairs, graph, keep, *, ablation, metric, batch_size, progress):
        self.calls.append((keep.clone(), ablation))
        share = keep.float().mean(dim=1)
        return self.corrupt + (self.clean - self.corrupt) * share


def test_faithfulness_curve_one_call_and_normalisation():
    g = toy_graph(3, 3)
    ev = _Evaluator()
    scores = random_scores(len(g.edges), seed=1)
    fr = (0.1, 0.5, 1.0)
    curve = faithfulness_curve(None, None, g, scores, method="toy", fractions=fr, evaluate=ev)
    assert len(ev.calls) == 1
    keep, ablation = ev.calls[0]
    rows = {tuple(r.tolist()) for r in keep}
    assert len(rows) == keep.shape[0]  # each distinct circuit evaluated once
    assert keep.shape == (len(fr) + 1, len(g.edges)) and ablation == "patching"  # 100% = the full model
    assert tuple([True] * len(g.edges)) in rows and tuple([False] * len(g.edges)) in rows
    assert (curve.clean_metric, curve.corrupt_metric) == (3.0, -1.0)
    assert curve.n_edges_asked == [int(p * len(g.edges)) for p in fr]
    assert 0 < curve.n_edges_kept[0] < curve.n_edges_kept[1] < curve.n_edges_kept[2] == len(g.edges)
    expected = [k / len(g.edges) for k in curve.n_edges_kept]
    assert curve.faithfulness == pytest.approx(expected)
    assert curve.faithfulness[-1] == pytest.approx(1.0)
    cpr, cmd = areas(fr, expected)
    assert (curve.cpr, curve.cmd) == (pytest.approx(cpr), pytest.approx(cmd))
    df = curve.to_frame()
    assert list(df["fraction"]) == list(fr) and df["faithfulness"].iloc[-1] == pytest.approx(1.0)


def test_several_curves_share_one_call():
    g = toy_graph(3, 3)
    ev = _Evaluator()
    scores = {"a": random_scores(len(g.edges), seed=1), "b": random_scores(len(g.edges), seed=2)}
    curves = faithfulness_curves(None, None, g, scores, absolute=(False, True), fractions=(0.2, 1.0), evaluate=ev)
    assert len(ev.calls) == 1
    assert [(c.method, c.absolute) for c in curves] == [("a", False), ("a", True), ("b", False), ("b", True)]
    for c in curves:
        single = faithfulness_curve(None, None, g, scores[c.method], method=c.method, fractions=(0.2, 1.0),
                                    absolute=c.absolute, evaluate=_Evaluator())
        assert c.faithfulness == pytest.approx(single.faithfulness) and c.n_edges_kept == single.n_edges_kept


def test_faithfulness_refuses_unknown_ablation_and_selection():
    g = toy_graph()
    with pytest.raises(InterpError, match="unknown ablation 'zero'; allowed: patching, mean"):
        faithfulness_curve(None, None, g, torch.ones(len(g.edges)), method="x", ablation="zero",
                           evaluate=_Evaluator())
    with pytest.raises(InterpError, match="unknown selection"):
        faithfulness_curve(None, None, g, torch.ones(len(g.edges)), method="x", selection="best",
                           evaluate=_Evaluator())


def test_faithfulness_refuses_when_clean_equals_corrupt():
    g = toy_graph()
    with pytest.raises(InterpError, match="faithfulness is undefined"):
        faithfulness_curve(None, None, g, torch.ones(len(g.edges)), method="x", evaluate=_Evaluator(1.0, 1.0))


def test_random_scores_fixed_seed():
    assert torch.equal(random_scores(50, seed=3), random_scores(50, seed=3))
    assert not torch.equal(random_scores(50, seed=3), random_scores(50, seed=4))


def test_edge_agreement_over_the_scored_subset():
    est = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    exact = torch.tensor([10.0, 20.0, 30.0, 40.0, math.nan])
    a = edge_agreement(est, exact, k=2)
    assert a["spearman"] == pytest.approx(1.0) and a["top2_overlap"] == 1.0 and a["n_sites"] == 4
    b = edge_agreement(-est, exact, edges=[0, 1, 2, 3], k=2)
    assert b["spearman"] == pytest.approx(-1.0) and b["top2_overlap"] == 1.0  # |score| ranks the top-k


def test_selections_per_method():
    g = toy_graph(3, 3)
    scores = {"a": random_scores(len(g.edges), seed=1), "random": random_scores(len(g.edges), seed=2)}
    curves = faithfulness_curves(None, None, g, scores, absolute={"a": (False, True), "random": (False,)},
                                 fractions=(0.2, 1.0), evaluate=_Evaluator())
    assert [(c.method, c.absolute) for c in curves] == [("a", False), ("a", True), ("random", False)]
