"""Circuit tables -> a plotly graph: heads placed by (layer, head), coloured by class, edges
as lines whose width follows the path-patching strength. No computation beyond layout."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

CLASS_COLOURS = {
    "name_mover": "#1f77b4",
    "negative_name_mover": "#d62728",
    "s_inhibition": "#2ca02c",
    "induction": "#9467bd",
    "duplicate_token": "#ff7f0e",
    "previous_token": "#8c564b",
    "other_upstream": "#7f7f7f",
}


def circuit_graph(nodes: pd.DataFrame, edges: pd.DataFrame, *, threshold: float = 0.0, title: str = "",
                  n_layers: int | None = None) -> go.Figure:
    """nodes: layer, head, class, score; edges: sender_layer, sender_head, receiver_layer,
    receiver_head, receiver_input, strength (receiver_layer empty for the logits)."""
    fig = go.Figure()
    if nodes.empty:
        fig.update_layout(title=title or "empty circuit")
        return fig
    logits_x = (n_layers if n_layers is not None else int(nodes["layer"].max()) + 1) + 0.5
    pos = {(int(r.layer), int(r.head)): (int(r.layer), int(r.head)) for r in nodes.itertuples()}
    shown = edges[edges["strength"].abs() >= threshold] if len(edges) else edges
    max_s = float(shown["strength"].abs().max()) if len(shown) else 1.0
    for e in shown.itertuples():
        src = pos.get((int(e.sender_layer), int(e.sender_head)))
        if src is None:
            continue
        if e.receiver_input == "logits" or pd.isna(e.receiver_layer):
            dst = (logits_x, -1.0)
        else:
            dst = pos.get((int(e.receiver_layer), int(e.receiver_head)), (int(e.receiver_layer), int(e.receiver_head)))
        receiver = (e.receiver_input if e.receiver_input == "logits"
                    else f"L{int(e.receiver_layer)}H{int(e.receiver_head)}.{e.receiver_input}")
        fig.add_trace(go.Scatter(
            x=[src[0], dst[0]], y=[src[1], dst[1]], mode="lines", showlegend=False, hoverinfo="text",
            text=f"L{e.sender_layer}H{e.sender_head} -> {receiver}: {e.strength:+.3f}",
            line={"width": 1 + 6 * abs(e.strength) / max_s,
                  "color": "rgba(60,60,60,0.5)" if e.strength >= 0 else "rgba(214,39,40,0.5)"},
        ))
    for cls, group in nodes.groupby("class"):
        fig.add_trace(go.Scatter(
            x=group["layer"], y=group["head"], mode="markers+text", name=str(cls),
            text=[f"L{r.layer}H{r.head}" for r in group.itertuples()], textposition="top center",
            marker={"size": 16, "color": CLASS_COLOURS.get(str(cls), "#17becf")},
            hovertext=[f"L{r.layer}H{r.head} {cls}: score {r.score:+.3f}" for r in group.itertuples()],
            hoverinfo="text",
        ))
    fig.add_trace(go.Scatter(x=[logits_x], y=[-1.0], mode="markers+text", text=["logits"], name="logits",
                             marker={"size": 18, "symbol": "square", "color": "black"}, textposition="top center"))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="head", height=520, template="plotly_white")
    return fig
