"""Edge circuits as figures: faithfulness curves of several methods on one plot, and an edge
circuit drawn as the workbench's circuit graph (heads by layer, the selected edges). Tidy
frames in, figures out; no computation beyond layout.

    fig = faithfulness_figure(pd.concat([c.to_frame() for c in curves]))
    fig = edge_circuit_graph(circuit_frame(graph, scores, keep), classes=ioi_classes)
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.analyses.edge_circuits import areas, head_tables
from interp.core.types import Head
from interp.viz.workbench import circuit_graph

__all__ = ["faithfulness_figure", "edge_circuit_graph"]

_DASH = {True: "dot", False: "solid"}


def _label(method: str, selection: str, absolute: bool, part: pd.DataFrame) -> str:
    cpr, cmd = areas(list(part["fraction"]), list(part["faithfulness"]))
    sel = f"{selection}, {'|score|' if absolute else 'signed'}"
    return f"{method} ({sel}): CPR {cpr:.2f}, CMD {cmd:.2f}"


def faithfulness_figure(curves: pd.DataFrame, title: str = "Faithfulness by circuit size") -> go.Figure:
    """curves: `FaithfulnessCurve.to_frame()`s concatenated (method, selection, absolute,
    fraction, faithfulness, n_edges_kept). One line per (method, selection, absolute); x is the
    edge fraction on a log axis (the areas in the legend are MIB's, over the linear fraction);
    the dashed line is f = 1 (the full model)."""
    fig = go.Figure()
    for (method, selection, absolute), part in curves.groupby(["method", "selection", "absolute"], sort=False):
        part = part.sort_values("fraction")
        fig.add_trace(go.Scatter(
            x=part["fraction"], y=part["faithfulness"], mode="lines+markers",
            name=_label(str(method), str(selection), bool(absolute), part), line={"dash": _DASH[bool(absolute)]},
            customdata=part[["n_edges_kept"]].to_numpy(),
            hovertemplate="fraction %{x}<br>f = %{y:.3f}<br>%{customdata[0]} edges kept<extra></extra>",
        ))
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey")
    fig.update_layout(title=title, xaxis_title="fraction of edges (log axis)", yaxis_title="faithfulness f",
                      height=480, template="plotly_white", legend={"font": {"size": 10}})
    fig.update_xaxes(type="log")
    return fig


def edge_circuit_graph(circuit: pd.DataFrame, *, classes: dict[Head, str] | None = None, title: str = "",
                       n_layers: int | None = None, n_heads: int | None = None,
                       highlight: set[Head] | None = None) -> go.Figure:
    """circuit: `circuit_frame`'s table. Its heads and head-to-head / head-to-logits edges
    (`head_tables`) drawn by the workbench's `circuit_graph`; heads coloured by `classes`."""
    nodes, edges = head_tables(circuit, classes)
    return circuit_graph(nodes, edges, title=title, n_layers=n_layers, n_heads=n_heads, highlight=highlight)
