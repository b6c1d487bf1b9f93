"""Cross-attention maps and their aggregations (single head, layer, all layers, last layers)."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.cross_attention import aggregation_kind, aggregation_sets, cross_attention_maps


@pytest.fixture(scope="module")
def ca(tiny_speech, tiny_features):
    return cross_attention_maps(tiny_speech, tiny_features, [5, 6, 7], n_frames=12, utterance="u0")


def test_shapes_and_window(ca, tiny_speech, tiny_features):
    assert ca.weights.shape == (2, 2, 3, 12) and ca.axes == ("layer", "head", "token", "frame")
    full = tiny_speech.cross_attention(tiny_features, [5, 6, 7])[:, 0]
    torch.testing.assert_close(ca.weights, full[..., :12])  # cut, not renormalised
    torch.testing.assert_close(ca.window_mass, full[..., :12].sum(-1))
    assert (ca.window_mass <= 1 + 1e-6).all()
    assert ca.tokens == [" t5", " t6", " t7"]


def test_aggregations_are_means_over_their_heads(ca):
    w = ca.weights
    torch.testing.assert_close(ca.aggregate("L1.H0"), w[1, 0])
    torch.testing.assert_close(ca.aggregate("L0"), w[0].mean(0))
    torch.testing.assert_close(ca.aggregate("all"), w.mean((0, 1)))
    torch.testing.assert_close(ca.aggregate("last1", last_layers=1), w[1].mean(0))
    aggs = ca.aggregations(last_layers=1)
    assert list(aggs) == ["L0.H0", "L0.H1", "L1.H0", "L1.H1", "L0", "L1", "all", "last1"]
    assert all(a.shape == (3, 12) for a in aggs.values())
    assert [aggregation_kind(n)[0] for n in aggs] == ["head"] * 4 + ["layer"] * 2 + ["all", "last"]


def test_to_frame_is_tidy(ca):
    df = ca.to_frame()
    assert len(df) == 2 * 2 * 3 * 12
    assert {"layer", "head", "token_index", "frame", "weight", "token", "utterance"} <= set(df.columns)
    row = df[(df.layer == 1) & (df["head"] == 0) & (df.token_index == 2) & (df.frame == 5)]
    assert float(row.weight.iloc[0]) == pytest.approx(float(ca.weights[1, 0, 2, 5]))
    assert len(ca.mass_frame()) == 12


def test_errors(ca, tiny_speech, tiny_features):
    with pytest.raises(KeyError, match="unknown cross-attention aggregation 'L9'"):
        ca.aggregate("L9")
    with pytest.raises(ValueError, match="last_layers must be in 1..2"):
        aggregation_sets(2, 2, 3)
    with pytest.raises(ValueError, match="n_frames must be in 1..20"):
        cross_attention_maps(tiny_speech, tiny_features, [5], n_frames=21)
    with pytest.raises(ValueError, match="transcript is empty"):
        cross_attention_maps(tiny_speech, tiny_features, [])
