"""The edge_circuit kind's config: the bundled YAML loads, bad input is one ConfigError naming
the field; the exact-patching subset; the estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config
from interp.io.kinds.edges import estimate, subset_edges
from tests.analyses.edge_fixtures import toy_graph

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _cfg(**over):
    return parse_config({"kind": "edge_circuit", "name": "e", "model": {"name": "tiny-llama"}, **over})


def test_bundled_yaml_loads():
    cfg = load_config(EXPERIMENTS / "ioi_edges.yaml")
    assert cfg.kind == "edge_circuit" and cfg.model.name == "smollm2-135m"
    assert cfg.edges.methods == ("eap", "eap-ig-inputs") and cfg.edges.steps == 5
    assert cfg.faithfulness.fractions[0] == 0.001 and cfg.faithfulness.fractions[-1] == 1.0


@pytest.mark.parametrize("over, path, words", [
    ({"edges": {"methods": ["eap", "acdc"]}}, "edges.methods", "eap-ig-inputs"),
    ({"edges": {"methods": ["exact"]}}, "edges.methods", "eap"),
    ({"edges": {"steps": 0}}, "edges.steps", ">= 1"),
    ({"faithfulness": {"fractions": [0.1, 1.5]}}, "faithfulness.fractions", "outside (0, 1]"),
    ({"faithfulness": {"fractions": [0.0, 0.5]}}, "faithfulness.fractions", "outside (0, 1]"),
    ({"faithfulness": {"fractions": [0.5]}}, "faithfulness.fractions", "at least 2"),
    ({"faithfulness": {"ablation": "zero"}}, "faithfulness.ablation", "patching"),
    ({"circuit": {"fraction": 2}}, "circuit.fraction", "outside (0, 1]"),
    ({"circuit": {"method": "eap-ig-activations"}}, "circuit", "not among edges.methods"),
    ({"task": "mcq", "reference_run": "latest"}, "reference_run", "task: ioi"),
])
def test_bad_config_is_one_config_error_naming_the_field(over, path, words):
    with pytest.raises(ConfigError) as info:
        _cfg(**over)
    msg = str(info.value)
    assert info.value.path is not None and info.value.path.startswith(path), msg
    assert words in msg and "\n" not in msg, msg


def test_subset_is_edges_into_the_logits_and_the_chosen_heads():
    g = toy_graph(2, 2)
    sub = subset_edges(g, ["a1.h0"])
    receivers = {g.edges[i][1] for i in sub}
    assert receivers == {"logits", "a1.h0"}
    assert len(sub) == 7 + 3 * 4  # 7 senders into the logits; 4 upstream senders x q, k, v into a1.h0


def test_estimate_from_the_config_alone():
    cfg = _cfg(data={"n_prompts": 4}, exact={"n_prompts": 2, "top_heads": 1})
    costs = estimate(cfg, None, None)
    assert costs["data.n_prompts"] == 4 * 3 + 4 * (5 + 2)
    assert costs["exact.n_prompts"] == 2 * (1 + 3)
    assert costs["faithfulness.fractions"] > 0
