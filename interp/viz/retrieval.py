"""Retrieval-head frames -> plotly figures: needle accuracy by (length, depth), masking bars.

    fig = trial_grid(res.trials.assign(correct=...), "correct", "Needle accuracy")
    fig = masking_figure(masking_result)
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

__all__ = ["trial_grid", "masking_figure"]


def trial_grid(frame: pd.DataFrame, value: str, title: str) -> go.Figure:
    grid = frame.pivot_table(index="depth", columns="context_length", values=value, aggfunc="mean")
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(c) for c in grid.columns], y=[f"{d:.2f}" for d in grid.index],
                               colorscale="Viridis", zmin=0, zmax=1, colorbar={"title": value},
                               hovertemplate="length %{x}<br>depth %{y}<br>" + value + " %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="haystack length (tokens)", yaxis_title="needle depth")
    return fig


def masking_figure(res) -> go.Figure:
    s = res.summary()
    fig = go.Figure()
    fig.add_bar(x=s["mode"], y=[s["unmasked"].iloc[0]] * len(s), name="unmasked")
    fig.add_bar(x=s["mode"], y=s["retrieval_masked"], name="top-K retrieval heads masked")
    fig.add_bar(x=s["mode"], y=s["random_mean"], name="K random heads (mean over seeds)",
                error_y={"type": "data", "array": s["random_std"].fillna(0).tolist()})
    fig.update_layout(barmode="group", title="Needle accuracy with heads masked", xaxis_title="ablation",
                      yaxis_title="accuracy (ROUGE-1 recall > 0.5)", yaxis_range=[0, 1.05])
    return fig
