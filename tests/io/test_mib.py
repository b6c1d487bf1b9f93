"""MIB submission format: a hand-written file in the layout of MIB-circuit-track's example
circuit (cfg / nodes / edges, edge keys "s->r<q>"), export, and an exact round trip."""

from __future__ import annotations

import json

import pytest
import torch

from interp.analyses.edge_circuits import select_topn
from interp.core.errors import InterpError
from interp.io.mib import mib_dict, mib_folder, read_mib_circuit, write_mib_circuit
from tests.analyses.edge_fixtures import toy_graph

# Written by hand for a 1-layer, 1-head model, following the structure of MIB's example file.
HAND_WRITTEN = """{"cfg": {"n_layers": 1, "n_heads": 1, "parallel_attn_mlp": false, "d_model": 8},
 "nodes": {"input": {"in_graph": true}, "a0.h0": {"in_graph": true}, "m0": {"in_graph": false},
           "logits": {"in_graph": true}},
 "edges": {"input->a0.h0<q>": {"score": 0.5, "in_graph": true},
           "input->a0.h0<k>": {"score": -0.25, "in_graph": false},
           "input->a0.h0<v>": {"score": 0.125, "in_graph": false},
           "input->m0": {"score": 0.0, "in_graph": false},
           "a0.h0->m0": {"score": 1e-05, "in_graph": false},
           "input->logits": {"score": -2.0, "in_graph": false},
           "a0.h0->logits": {"score": 3.0, "in_graph": true},
           "m0->logits": {"score": 0.75, "in_graph": false}}}"""


def test_reads_a_hand_written_mib_file(tmp_path):
    g = toy_graph(1, 1)
    p = tmp_path / "importances.json"
    p.write_text(HAND_WRITTEN)
    scores, kept = read_mib_circuit(p, g)
    assert g.edge_name(6) == "a0.h0->logits"
    assert scores[6] == -3.0 and scores[0] == -0.5  # MIB's sign (loss = -metric) negated into ours
    assert kept.tolist() == [True, False, False, False, False, False, True, False]
    # and writing it back gives the same object
    assert mib_dict(g, scores, kept, d_model=8) == json.loads(HAND_WRITTEN)


def test_export_layout_and_round_trip_exact(tmp_path):
    g = toy_graph(2, 3)
    scores = torch.randn(len(g.edges), generator=torch.Generator().manual_seed(0))
    kept = select_topn(g, scores, 20)
    path = write_mib_circuit(tmp_path / mib_folder("ioi", "smollm2-135m") / "importances.json", g, scores, kept,
                             d_model=16)
    assert path.parent.name == "ioi_smollm2-135m"
    d = json.loads(path.read_text())
    assert list(d) == ["cfg", "nodes", "edges"]
    assert d["cfg"] == {"n_layers": 2, "n_heads": 3, "parallel_attn_mlp": False, "d_model": 16}
    assert list(d["edges"])[:2] == ["input->a0.h0<q>", "input->a0.h0<k>"]
    assert set(d["edges"]["m1->logits"]) == {"score", "in_graph"}
    assert d["nodes"]["logits"]["in_graph"] is True
    back, back_kept = read_mib_circuit(path, g)
    assert torch.equal(back, scores.double()) and torch.equal(back.float(), scores)
    assert torch.equal(back_kept, kept)


def test_mib_folder_names():
    assert mib_folder("arc_easy", "llama3") == "arc-easy_llama3"


def test_wrong_model_or_format_is_refused(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(HAND_WRITTEN)
    with pytest.raises(InterpError, match="n_layers = 1 but the model has 2"):
        read_mib_circuit(p, toy_graph(2, 1))
    d = json.loads(HAND_WRITTEN)
    del d["edges"]["m0->logits"]
    with pytest.raises(InterpError, match="1 missing"):
        read_mib_circuit(d, toy_graph(1, 1))
    p.write_text('{"nodes": {}}')
    with pytest.raises(InterpError, match="missing key"):
        read_mib_circuit(p, toy_graph(1, 1))
