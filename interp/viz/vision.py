"""Figures for the vision-language head analyses (`interp.analyses.vhd`): T-VHD by token label,
and hallucination / accuracy per condition (baseline, VHR, random heads). No computation.

    fig = tvhd_box(tokens)                 # tokens: HeadDivergenceResult.token_frame + a label column
    fig = condition_bars(summary)          # summary: condition, accuracy, chair_i, chair_s, prior_rate
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LABEL_ORDER = ("correct", "hallucinated", "other")
METRICS = (("accuracy", "accuracy"), ("chair_i", "CHAIR_i"), ("chair_s", "CHAIR_s"), ("prior_rate", "prior colour rate"))


def tvhd_box(tokens: pd.DataFrame, title: str = "") -> go.Figure:
    """Box plot of T-VHD per token label (correct / hallucinated attribute tokens, other)."""
    fig = go.Figure()
    for label in [x for x in LABEL_ORDER if x in set(tokens["label"])]:
        part = tokens[tokens["label"] == label]
        fig.add_trace(go.Box(y=part["tvhd"], name=f"{label} (n={len(part)})", boxmean=True,
                             text=part["token"], hovertemplate="%{text}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, yaxis_title="T-VHD", showlegend=False)
    return fig


def condition_bars(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """One panel per metric, one bar per condition."""
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=[t for _, t in METRICS])
    for col, (key, label) in enumerate(METRICS, start=1):
        fig.add_trace(go.Bar(x=summary["condition"], y=summary[key], name=label, showlegend=False,
                             hovertemplate=f"%{{x}}<br>{label} = %{{y:.3f}}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(range=[0, 1], row=1, col=col)
    fig.update_layout(title=title or None)
    return fig
