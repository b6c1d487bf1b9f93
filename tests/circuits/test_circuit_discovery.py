"""Circuit discovery pieces on tiny models: pattern scores vs HF's own attentions, the circuit
tables, faithfulness bounds, overlap arithmetic, Colored Objects data and the intervention,
and the 'circuit' experiment kind through the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from interp.analyses.circuit import (
    CircuitResult,
    circuit_overlap,
    discover_circuit,
    mean_ablation_faithfulness,
)
from interp.analyses.colored_objects import (
    intervention_experiment,
    option_accuracy,
    random_heads_like,
)
from interp.analyses.head_patterns import head_pattern_scores, repeated_random_tokens
from interp.cli import main
from interp.data.colored_objects import generate_colored_objects
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models import load_model
from interp.models.tiny import build_tiny


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


def test_pattern_scores_match_hf_attentions(model):
    res = head_pattern_scores(model, n=3, seq_len=6, seed=1)
    raw = build_tiny("tiny-llama", vocab_size=len(model.tokenizer), seed=0)
    toks = repeated_random_tokens(model, 3, 6, 1)
    with torch.no_grad():
        att = raw(toks, output_attentions=True).attentions  # per layer (batch, head, q, k)
    S = 6
    for layer, a in enumerate(att):
        ind = torch.stack([a[:, :, q, q - S + 1] for q in range(S + 1, 2 * S)], -1).mean((0, 2))
        dup = torch.stack([a[:, :, q, q - S] for q in range(S + 1, 2 * S)], -1).mean((0, 2))
        prev = torch.stack([a[:, :, q, q - 1] for q in range(1, 2 * S)], -1).mean((0, 2))
        assert torch.allclose(res.scores["induction"][layer], ind, atol=1e-5)
        assert torch.allclose(res.scores["duplicate_token"][layer], dup, atol=1e-5)
        assert torch.allclose(res.scores["previous_token"][layer], prev, atol=1e-5)
    df = res.to_frame()
    assert list(df.columns) == ["layer", "head", "score", "value"] and len(df) == 3 * 4 * 4


def test_discover_circuit_tables_and_faithfulness(model):
    ds = generate_ioi(3, model.tokenizer, seed=0, templates=[0])
    pairs = tokenize_pairs(ds, model.tokenizer)
    c = discover_circuit(model, pairs, ds, threshold=0.0)
    assert {"layer", "head", "class", "score", "copy_score"} <= set(c.nodes.columns)
    assert ({"sender_layer", "sender_head", "receiver_layer", "receiver_head", "receiver_input", "strength"}
            <= set(c.edges.columns))
    movers = c.nodes[c.nodes["class"] == "name_mover"]
    assert len(movers) >= 1
    eff = 1.0 - c.maps["to_logits"].normalised
    for r in movers.itertuples():
        assert r.score == pytest.approx(float(eff[r.layer, r.head]), abs=1e-6)
        assert 0.0 <= r.copy_score <= 1.0
    L, H = model.spec.n_layers, model.spec.n_heads
    all_heads = [(layer, h) for layer in range(L) for h in range(H)]
    assert mean_ablation_faithfulness(model, pairs, all_heads)["faithfulness"] == pytest.approx(1.0, abs=1e-5)


def test_overlap_arithmetic():
    def circ(heads):
        nodes = pd.DataFrame([{"layer": a, "head": b, "class": c, "score": 1.0} for a, b, c in heads])
        return CircuitResult(nodes, pd.DataFrame(), {}, None, {})  # type: ignore[arg-type]

    a = circ([(1, 1, "name_mover"), (2, 2, "s_inhibition"), (3, 3, "induction")])
    b = circ([(1, 1, "name_mover"), (2, 2, "s_inhibition"), (5, 5, "name_mover"), (6, 6, "induction")])
    ov = circuit_overlap(a, b)
    assert ov["jaccard"] == pytest.approx(2 / 5) and ov["share_of_b_in_a"] == pytest.approx(0.5)
    assert ov["share_of_b_in_a[name_mover]"] == pytest.approx(0.5) and ov["share_of_b_in_a[induction]"] == 0.0


def test_colored_objects_data(model):
    tok = model.tokenizer
    ds = generate_colored_objects(6, tok, seed=3)
    assert ds.pairs == generate_colored_objects(6, tok, seed=3).pairs
    pairs = tokenize_pairs(ds, tok)  # equal lengths and single-token answers are validated here
    assert pairs.n == 6
    for p in ds.pairs:
        ids = tok(p.clean, add_special_tokens=False)["input_ids"]
        m = p.meta
        assert p.answer == " " + m["colours"][m["query"]] and p.distractor == " " + m["colours"][m["corrupt_query"]]
        assert [ids[i] for i in m["colour_positions"]] == m["option_ids"]
        assert m["positions"]["IO"] == m["colour_positions"][m["query"]]


def test_option_accuracy_and_intervention(model):
    ds = generate_colored_objects(4, model.tokenizer, seed=0)
    pairs = tokenize_pairs(ds, model.tokenizer)
    base = option_accuracy(model, pairs, ds)
    assert 0.0 <= base.accuracy <= 1.0 and base.n == 4
    res = intervention_experiment(model, pairs, ds, [(2, 1), (3, 0)], n_random=2)
    assert res.before == base.accuracy and len(res.random_controls) == 2
    # the hooks are gone afterwards
    assert option_accuracy(model, pairs, ds).per_prompt == base.per_prompt
    rand = random_heads_like([(2, 1), (3, 0)], 4, {(2, 1), (3, 0)}, seed=0)
    assert [h[0] for h in rand] == [2, 3] and not {(2, 1), (3, 0)} & set(rand)


@pytest.mark.integration  # a whole experiment run, end to end
def test_circuit_kind_end_to_end_and_errors(tmp_path, capsys):
    runs = tmp_path / "runs"
    ioi = {"kind": "circuit", "name": "c_ioi", "model": {"name": "tiny-llama"},
           "data": {"n_prompts": 2, "templates": [0]}}
    p = tmp_path / "ioi.yaml"
    p.write_text(yaml.safe_dump(ioi))
    assert main(["run", str(p), "--runs-dir", str(runs), "--quiet"]) == 0
    co = {**ioi, "name": "c_co", "task": "colored_objects", "reference_run": "latest"}
    p2 = tmp_path / "co.yaml"
    p2.write_text(yaml.safe_dump(co))
    assert main(["run", str(p2), "--runs-dir", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "overlap with the IOI circuit" in out and "colored objects accuracy" in out
    run_dir = max(runs.glob("c_co-*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "overlap" in manifest["analyses_done"]
    nodes = pd.read_parquet(run_dir / "tables" / "circuit_nodes.parquet")
    assert {"layer", "head", "class", "score"} <= set(nodes.columns)

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**ioi, "task": "mcq"}))
    assert main(["validate", str(bad)]) == 2
    assert "task" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**co, "model": {"name": "tiny-gpt2"}}))
    assert main(["run", str(missing), "--runs-dir", str(runs), "--quiet"]) == 2
    assert "reference_run" in capsys.readouterr().err
