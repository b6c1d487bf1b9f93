"""Figures for the workbench app: clickable head maps, attention patterns, score correlations,
circuit graphs. Like `heatmaps`, each takes tidy frames and only arranges them; no computation.

    fig = clickable_head_map(df, "value", selected=(9, 6))     # head_heatmap + click targets
    fig = attention_heatmap(attention_pattern(model, text, 9, 6).to_frame())
    fig = correlation_heatmap(atlas.correlations())
    fig = circuit_graph(circuit.nodes, circuit.edges, highlight={(9, 6)})
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.viz.heatmaps import COLORSCALE, head_heatmap

__all__ = ["clickable_head_map", "attention_heatmap", "correlation_heatmap", "circuit_graph", "class_colour"]

# One colour per head class, the same in every graph (two circuits side by side must agree);
# classes not listed get a palette colour chosen from their name.
_CLASS_COLOURS = {
    "name_mover": "#1f77b4", "negative_name_mover": "#d62728", "s_inhibition": "#2ca02c",
    "induction": "#9467bd", "duplicate_token": "#ff7f0e", "previous_token": "#8c564b",
    "backup_name_mover": "#17becf", "other_upstream": "#7f7f7f",
}
_PALETTE = ["#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94"]


def class_colour(cls: str) -> str:
    key = str(cls).strip().lower().replace(" ", "_").replace("-", "_")
    if key in _CLASS_COLOURS:
        return _CLASS_COLOURS[key]
    return _PALETTE[sum(key.encode()) % len(_PALETTE)]
_INPUT_DASH = {"q": "solid", "k": "dash", "v": "dot"}


def clickable_head_map(
    df: pd.DataFrame, value: str = "value", title: str = "", selected: tuple[int, int] | None = None
) -> go.Figure:
    """`head_heatmap` plus an invisible marker on every cell, so that a click (or a box
    select) reports the (head, layer) of the cell; `selected` gets a black outline."""
    fig = head_heatmap(df, value, title=title)
    fig.add_trace(
        go.Scatter(
            x=df["head"].tolist(),
            y=df["layer"].tolist(),
            mode="markers",
            marker={"size": 18, "opacity": 0, "symbol": "square"},
            customdata=np.stack([df["layer"], df["head"]], axis=1),
            hovertemplate=f"L%{{y}}H%{{x}}<br>{value} = %{{text}}<extra></extra>",
            text=[f"{v:.4g}" for v in df[value].astype(float)],
            showlegend=False,
            name="heads",
        )
    )
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line={"color": "black", "width": 3})
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    # clickmode/dragmode left unset: Streamlit makes a click select a point only in pan mode
    fig.update_layout(margin={"t": 50},
                      height=max(360, min(24 * n_layers, 900) + 140))
    # explicit ranges: the invisible markers would otherwise pad the axes
    fig.update_xaxes(dtick=1, range=[-0.5, n_heads - 0.5])
    fig.update_yaxes(dtick=1 if n_layers <= 16 else 2, range=[n_layers - 0.5, -0.5], autorange=False)
    return fig


def attention_heatmap(df: pd.DataFrame, title: str = "") -> go.Figure:
    """Query (y) x key (x) attention weights from `AttentionPatternResult.to_frame()`, each axis
    labelled with its tokens (position numbers keep repeated tokens apart)."""
    grid = df.pivot(index="query", columns="key", values="weight").sort_index().sort_index(axis=1)
    q_tok = df.drop_duplicates("query").set_index("query")["query_token"].reindex(grid.index)
    k_tok = df.drop_duplicates("key").set_index("key")["key_token"].reindex(grid.columns)
    q_labels = [f"{i}: {t!r}"[: 28] for i, t in q_tok.items()]
    k_labels = [f"{i}: {t!r}"[: 28] for i, t in k_tok.items()]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(dtype=float),
            x=k_labels,
            y=q_labels,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "attention"}},
            hovertemplate="query %{y}<br>key %{x}<br>weight = %{z:.3f}<extra></extra>",
        )
    )
    n = len(grid)
    fig.update_layout(
        title=title or None, xaxis_title="key (attended-to token)", yaxis_title="query token",
        height=max(350, 26 * n + 160), margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    return fig


def correlation_heatmap(corr: pd.DataFrame, title: str = "", zrange: tuple[float, float] = (-1, 1)) -> go.Figure:
    """A square score x score matrix (Spearman correlations, overlaps) with values written in."""
    z = corr.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=list(corr.columns), y=list(corr.index), colorscale=COLORSCALE if zrange[0] < 0 else "Blues",
            zmin=zrange[0], zmax=zrange[1], zmid=0 if zrange[0] < 0 else None,
            text=[["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z],
            texttemplate="%{text}", hovertemplate="%{y}<br>%{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title=title or None, height=max(350, 60 * len(corr) + 200))
    fig.update_yaxes(autorange="reversed")
    return fig


def circuit_graph(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    *,
    highlight: set[tuple[int, int]] | None = None,
    title: str = "",
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> go.Figure:
    """Heads at (x = layer, y = head) coloured by `class`, sized by |score|, information
    flowing left to right into a "logits" node; edges from sender to receiver with width by
    |strength|, dash by receiver input (q solid, k dashed, v dotted), blue for positive and red
    for negative strength. Heads in `highlight` get a thick black ring."""
    fig = go.Figure()
    # the logits sit one layer right of the last layer, halfway down the head axis
    last_layer = n_layers - 1 if n_layers else (int(nodes["layer"].max()) if len(nodes) else 0)
    last_head = n_heads - 1 if n_heads else (int(nodes["head"].max()) if len(nodes) else 0)
    logits = (last_layer + 1.0, last_head / 2)
    max_s = float(edges["strength"].abs().max()) if len(edges) else 1.0
    max_s = max_s or 1.0
    into_logits = False
    for e in edges.itertuples(index=False):
        to_logits = e.receiver_input == "logits" or pd.isna(e.receiver_layer)
        into_logits |= bool(to_logits)
        dst = logits if to_logits else (int(e.receiver_layer), int(e.receiver_head))
        target = "logits" if to_logits else f"L{int(e.receiver_layer)}H{int(e.receiver_head)}.{e.receiver_input}"
        fig.add_trace(go.Scatter(
            x=[e.sender_layer, dst[0]], y=[e.sender_head, dst[1]], mode="lines",
            line={"width": 0.5 + 7 * abs(e.strength) / max_s, "color": "#2166ac" if e.strength >= 0 else "#b2182b",
                  "dash": _INPUT_DASH.get(str(e.receiver_input), "solid")},
            opacity=0.55, hoverinfo="text", showlegend=False,
            text=f"L{e.sender_layer}H{e.sender_head} -> {target}: {e.strength:+.3g}",
        ))
    max_score = float(nodes["score"].abs().max()) if len(nodes) else 1.0
    max_score = max_score or 1.0
    highlight = highlight or set()
    for cls, part in nodes.groupby("class", sort=True):
        heads = list(part[["layer", "head"]].itertuples(index=False, name=None))
        ring = [(int(lay), int(h)) in highlight for lay, h in heads]
        fig.add_trace(go.Scatter(
            x=part["layer"], y=part["head"], mode="markers+text", name=str(cls),
            text=[f"L{lay}H{h}" for lay, h in heads], textposition="top center",
            marker={"size": 14 + 16 * part["score"].abs() / max_score,
                    "color": class_colour(str(cls)),
                    "line": {"width": [4 if r else 1 for r in ring],
                             "color": ["black" if r else "white" for r in ring]}},
            customdata=part[["score"]].to_numpy(),
            hovertemplate=f"%{{text}}<br>class {cls}<br>score %{{customdata[0]:.3g}}<extra></extra>",
        ))
    if into_logits:
        fig.add_trace(go.Scatter(x=[logits[0]], y=[logits[1]], mode="markers+text", text=["logits"],
                                 textposition="top center", name="logits",
                                 marker={"size": 18, "symbol": "square", "color": "black"}))
    fig.update_layout(title=title or None, xaxis_title="layer", yaxis_title="head", legend_title="class",
                      height=520, plot_bgcolor="white")
    fig.update_xaxes(dtick=1, gridcolor="#eee", range=[-0.5, last_layer + 1.5] if n_layers else None)
    fig.update_yaxes(dtick=1, gridcolor="#eee", autorange=False if n_heads else "reversed",
                     range=[last_head + 0.5, -0.5] if n_heads else None)
    return fig
