"""MCQ q/k compression frames -> plotly figures: the share of the letter metric kept vs rank.

    fig = rank_curves(comp.to_frame(), "normal", d_head=64)
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["rank_curves", "rank_label"]


def rank_label(r: int, d_head: int) -> str:
    """The tick label of rank `r`: 0 is the mean only, >= d_head is full rank."""
    return f"{r} (mean)" if r == 0 else (f"{r} (full)" if r >= d_head else str(r))


def rank_curves(frame: pd.DataFrame, condition: str, d_head: int, title: str = "") -> go.Figure:
    """Share of the letter logit difference and accuracy kept vs rank; one line per head x variant."""
    part = frame[frame["condition"] == condition]
    ranks = sorted(part["rank"].unique())
    ticks = [rank_label(int(r), d_head) for r in ranks]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["share of letter logit diff kept", "share of accuracy kept"])
    dash = {"q": "solid", "k": "dot", "qk": "dash"}
    for (label, variant), g in part.groupby(["label", "variant"], sort=False):
        g = g.sort_values("rank")
        x = [rank_label(int(r), d_head) for r in g["rank"]]
        for col, value in ((1, "share_logit_diff"), (2, "share_accuracy")):
            fig.add_trace(go.Scatter(
                x=x, y=g[value], mode="lines+markers", name=f"{label} {variant}", legendgroup=f"{label} {variant}",
                showlegend=col == 1, line={"dash": dash.get(variant, "solid")},
                hovertemplate=f"{label} {variant}<br>rank %{{x}}<br>{value} = %{{y:.3f}}<extra></extra>"),
            row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="rank", type="category", categoryorder="array", categoryarray=ticks, row=1, col=col)
    fig.update_yaxes(title_text="share of the unablated model", row=1, col=1)
    fig.update_layout(title=title or None)
    return fig
