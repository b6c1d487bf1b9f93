"""The edge_circuit kind end to end on tiny-llama with stand-ins for the edge scores and the
circuit evaluator (the plumbing: tables, figures, report, MIB file); the real analyses are
tested in tests/analyses and, with them, in the integration test."""

from __future__ import annotations

import html
import json

import pytest
import torch

import interp.analyses.edges as edges_mod
import interp.io.kinds.edges as kind
from interp.io.config import parse_config
from interp.io.mib import read_mib_circuit
from interp.io.runner import run_experiment
from interp.models import load_model

pytestmark = pytest.mark.integration  # a model and a whole run (~15 s)


def _fake_scores(model, pairs, *, method, steps=5, metric="logit_diff", edges=None, batch_size=64, grad_batch_size=20,
                 progress=None):
    graph = kind.edge_graph(model)
    gen = torch.Generator().manual_seed(len(method))
    s = torch.randn(len(graph), generator=gen)
    if edges is not None:
        keep = torch.full((len(graph),), float("nan"))
        keep[list(edges)] = s[list(edges)]
        s = keep
    return edges_mod.EdgeScores(graph, s, method, steps, pairs.n)


def _fake_evaluate(model, pairs, graph, keep, *, ablation, metric, batch_size, progress):
    return -1.0 + 3.0 * keep.float().mean(dim=1)  # clean 2, corrupt -1, f = share of edges kept


@pytest.fixture()
def fakes(monkeypatch):
    monkeypatch.setattr(kind, "edge_scores", _fake_scores)
    monkeypatch.setattr(edges_mod, "evaluate_circuits", _fake_evaluate)


def test_edge_circuit_run_writes_its_tables_report_and_mib_file(tmp_path, fakes):
    model = load_model("tiny-llama", device="cpu")
    cfg = parse_config({"kind": "edge_circuit", "name": "e", "model": {"name": "tiny-llama"},
                        "data": {"n_prompts": 4}, "exact": {"n_prompts": 2, "top_heads": 2, "top_k": 5},
                        "faithfulness": {"fractions": [0.01, 0.1, 1.0]}, "circuit": {"fraction": 0.1}})
    run = run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model)
    tables = set(run.tables())
    assert {"dataset", "edge_scores", "faithfulness", "faithfulness_summary", "exact_scores", "exact_agreement",
            "edge_circuit", "circuit_nodes", "circuit_edges"} <= tables
    summ = run.read_table("faithfulness_summary")
    assert set(summ["method"]) == {"eap", "eap-ig-inputs", "random"} and len(summ) == 5  # 2 x 2 + random
    curve = run.read_table("faithfulness")
    full = curve[curve["fraction"] == 1.0]
    assert full["faithfulness"].to_numpy() == pytest.approx(1.0)
    agree = run.read_table("exact_agreement")
    assert list(agree["method"]) == ["eap", "eap-ig-inputs"]
    graph = kind.edge_graph(model)
    mib = [p for p in run.path.iterdir() if p.name.startswith("mib-")]
    assert [p.name for p in mib] == ["mib-ioi_tiny-llama-importances.json"]
    scores, kept = read_mib_circuit(mib[0], graph)
    circ = run.read_table("edge_circuit")
    assert int(kept.sum()) == int(circ["in_circuit"].sum())
    assert json.loads(mib[0].read_text())["cfg"]["n_layers"] == model.spec.n_layers
    report = html.unescape((run.path / "report.html").read_text())
    for words in ("Faithfulness curves (MIB's CPR and CMD)", "Agreement with exact edge patching",
                  "random (topn by signed score): CPR"):
        assert words in report
