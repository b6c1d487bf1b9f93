"""Heatmaps and bars: pivot to the right axes, centred colour scale, top-k selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp.viz.heatmaps import dla_bar, head_heatmap, layer_head_table, position_heatmap


def _heads(n_layers: int = 3, n_heads: int = 4) -> pd.DataFrame:
    rows = [
        {"layer": layer, "head": head, "normalised": layer * 10 + head - 5.0, "raw": 1.0}
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    return pd.DataFrame(rows).sample(frac=1, random_state=0)  # order must not matter


def test_head_heatmap_axes() -> None:
    fig = head_heatmap(_heads(), title="heads")
    trace = fig.data[0]
    assert trace.type == "heatmap" and np.asarray(trace.z).shape == (3, 4)
    assert list(trace.x) == [0, 1, 2, 3] and list(trace.y) == [0, 1, 2]
    assert trace.z[2][1] == 21 - 5.0  # z[layer][head]
    assert trace.zmid == 0 and fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert "layer %{y}" in trace.hovertemplate and "head %{x}" in trace.hovertemplate
    assert fig.layout.title.text == "heads"
    assert head_heatmap(_heads(), value="raw").data[0].z[0][0] == 1.0


def test_head_heatmap_errors() -> None:
    with pytest.raises(ValueError, match="missing \\['normalised'\\]"):
        head_heatmap(pd.DataFrame({"layer": [0], "head": [0]}))
    doubled = pd.concat([_heads(), _heads()])
    with pytest.raises(ValueError, match="several rows"):
        head_heatmap(doubled)


def test_position_heatmap_facets_and_labels() -> None:
    rows = [
        {"component": c, "layer": layer, "position": p, "normalised": float(layer - p)}
        for c in ("resid_pre", "attn_out", "mlp_out")
        for layer in range(2)
        for p in range(3)
    ]
    tokens = ["<s>", " the", " the"]  # repeated tokens stay distinct positions
    fig = position_heatmap(pd.DataFrame(rows), token_labels=tokens, title="res")
    assert [t.name for t in fig.data] == ["resid_pre", "attn_out", "mlp_out"]
    assert [a.text for a in fig.layout.annotations] == ["resid_pre", "attn_out", "mlp_out"]
    assert all(np.asarray(t.z).shape == (2, 3) for t in fig.data)
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2]
    assert list(fig.layout.xaxis3.ticktext) == tokens
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.coloraxis.cmid == 0 and all(t.coloraxis == "coloraxis" for t in fig.data)
    with pytest.raises(ValueError, match="token labels"):
        position_heatmap(pd.DataFrame(rows), token_labels=["<s>"])


def test_position_heatmap_without_component_column() -> None:
    df = pd.DataFrame({"layer": [0, 0, 1, 1], "position": [0, 1, 0, 1], "v": [1.0, 2, 3, 4]})
    fig = position_heatmap(df, value="v")
    assert len(fig.data) == 1 and list(fig.layout.xaxis.ticktext) == ["0", "1"]


def test_dla_bar_top_k_by_absolute_value() -> None:
    df = pd.DataFrame(
        {"label": ["embed", "L0H1", "MLP0", "L1H0", "MLP1"], "contribution": [0.1, -3, 2, 0.5, -1]}
    )
    fig = dla_bar(df, top_k=3, title="dla")
    bar = fig.data[0]
    assert bar.type == "bar" and bar.orientation == "h"
    assert list(bar.y) == ["MLP1", "MLP0", "L0H1"]  # largest |value| drawn at the top
    assert list(bar.x) == [-1, 2, -3]
    assert bar.marker.color[0] != bar.marker.color[1]  # sign shows in the colour
    with pytest.raises(ValueError, match="unique"):
        dla_bar(pd.concat([df, df]))


def test_layer_head_table() -> None:
    df = pd.DataFrame({"layer": [0, 1, 2, 3], "head": [0] * 4, "v": [0.1, -5.0, np.nan, 2.0]})
    top = layer_head_table(df, "v", 2)
    assert list(top["layer"]) == [1, 3] and list(top.columns) == ["layer", "head", "v"]
    assert list(layer_head_table(df, "v", 10)["layer"]) == [1, 3, 0, 2]  # NaN last
    with pytest.raises(ValueError, match="top_k"):
        layer_head_table(df, "v", 0)
