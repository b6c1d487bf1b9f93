"""Edge-circuit figures and the head projection of an edge circuit (hand-made tables)."""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.edge_circuits import FaithfulnessCurve, circuit_frame, head_tables
from interp.viz.edges import edge_circuit_graph, faithfulness_figure
from tests.analyses.edge_fixtures import toy_graph


def _circuit():
    g = toy_graph(2, 2)
    names = ["input->a0.h0<q>", "a0.h0->a1.h1<v>", "a1.h1->logits", "a0.h0->m0", "m0->logits"]
    s = torch.zeros(len(g.edges))
    keep = torch.zeros(len(g.edges), dtype=torch.bool)
    for i, n in enumerate(names):
        s[g.index(n)] = -(i + 1.0)
        keep[g.index(n)] = True
    return circuit_frame(g, s, keep)


def test_head_tables_project_the_circuit_onto_heads():
    nodes, edges = head_tables(_circuit(), {(1, 1): "name_mover"})
    assert list(nodes.columns) == ["layer", "head", "class", "score"]
    assert nodes[["layer", "head", "class"]].values.tolist() == [[0, 0, "edge circuit"], [1, 1, "name_mover"]]
    assert nodes["score"].tolist() == [-2.0 - 4.0, -3.0]  # a0.h0: -> a1.h1<v> and -> m0
    e = edges.sort_values("strength").reset_index(drop=True)
    assert e["receiver_input"].tolist() == ["logits", "v"]  # MLP and input edges left out
    assert pd.isna(e.loc[0, "receiver_layer"]) and e.loc[1, "receiver_layer"] == 1


def test_figures_build():
    curves = pd.concat([
        FaithfulnessCurve(m, "topn", a, "patching", (0.2, 1.0), [2, 10], [2, 10], [v, 2.0], 2.0, 0.0, 10).to_frame()
        for m, a, v in [("eap", True, 1.0), ("random", False, 0.2)]])
    fig = faithfulness_figure(curves)
    assert len(fig.data) == 2
    assert fig.data[0].name == "eap (topn, |score|): CPR 0.60, CMD 0.20"  # f = 0.5, 1 over [0.2, 1]
    g = edge_circuit_graph(_circuit(), n_layers=2, n_heads=2)
    assert any(t.name == "logits" for t in g.data)
