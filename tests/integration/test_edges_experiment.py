"""The edge_circuit kind end to end on tiny-llama with the real edge scores and evaluator."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.edges import edge_graph
from interp.io.config import parse_config
from interp.io.mib import read_mib_circuit
from interp.io.runner import run_experiment
from interp.models import load_model

pytestmark = pytest.mark.integration


def test_edge_circuit_experiment_on_tiny_llama(tmp_path):
    model = load_model("tiny-llama", device="cpu")
    cfg = parse_config({"kind": "edge_circuit", "name": "edges", "model": {"name": "tiny-llama"},
                        "data": {"n_prompts": 4}, "edges": {"steps": 2},
                        "exact": {"n_prompts": 4, "top_heads": 1, "top_k": 5},
                        "circuit": {"fraction": 0.05}, "reference_run": "discover"})
    run = run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model)
    curves = run.read_table("faithfulness")
    # the full circuit is the clean model, as the evaluator computes it (f = 1 up to float error)
    assert curves.loc[curves["fraction"] == 1.0, "faithfulness"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (curves["n_edges_kept"] <= curves["n_edges_asked"]).all()
    summary = run.read_table("faithfulness_summary")
    assert len(summary) == 5 and summary["cpr"].notna().all()  # 2 methods x 2 selections + random
    agree = run.read_table("exact_agreement")
    assert agree["n_sites"].iloc[0] == len(run.read_table("exact_scores"))
    graph = edge_graph(model)
    circ = run.read_table("edge_circuit")
    _, kept = read_mib_circuit(run.path / "mib-ioi_tiny-llama-importances.json", graph)
    names = {graph.edge_name(i) for i in torch.nonzero(kept).flatten().tolist()}
    assert names == set(circ.loc[circ["in_circuit"], "edge"])
    assert "ioi_class_overlap" in run.tables()
