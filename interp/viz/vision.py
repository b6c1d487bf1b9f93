"""Figures for the vision-language head analyses (`interp.analyses.vhd`): T-VHD by token label,
and hallucination / accuracy against alpha (baseline, VHR, random heads). No computation.

    fig = tvhd_box(tokens)                 # tokens: HeadDivergenceResult.token_frame + a label column
    fig = alpha_curves(summary)            # summary: method, alpha, seed, accuracy, chair_i, chair_s, prior_rate
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LABEL_ORDER = ("correct", "hallucinated", "other")
METRICS = (("accuracy", "accuracy"), ("chair_i", "CHAIR_i"), ("chair_s", "CHAIR_s"),
           ("prior_rate", "prior colour rate"))


def tvhd_box(tokens: pd.DataFrame, title: str = "") -> go.Figure:
    """Box plot of T-VHD per token label (correct / hallucinated attribute tokens, other)."""
    fig = go.Figure()
    for label in [x for x in LABEL_ORDER if x in set(tokens["label"])]:
        part = tokens[tokens["label"] == label]
        fig.add_trace(go.Box(y=part["tvhd"], name=f"{label} (n={len(part)})", boxmean=True,
                             text=part["token"], hovertemplate="%{text}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, yaxis_title="T-VHD", showlegend=False)
    return fig


def alpha_curves(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """One panel per metric: VHR and the random-head control (one marker per seed, a line through
    their mean) against alpha; the baseline as a dotted horizontal line."""
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=[t for _, t in METRICS])
    base = summary[summary["method"] == "baseline"]
    for col, (key, label) in enumerate(METRICS, start=1):
        for method, colour in (("vhr", "#d62728"), ("random", "#7f7f7f")):
            part = summary[summary["method"] == method]
            if part.empty:
                continue
            mean = part.groupby("alpha")[key].mean()
            fig.add_trace(go.Scatter(x=mean.index, y=mean.values, mode="lines+markers", name=method,
                                     legendgroup=method, showlegend=col == 1, line={"color": colour},
                                     hovertemplate=f"{method}<br>alpha %{{x}}<br>{label} = %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
            if method == "random" and part["seed"].nunique() > 1:
                fig.add_trace(go.Scatter(x=part["alpha"], y=part[key], mode="markers", showlegend=False,
                                         marker={"color": colour, "size": 5, "opacity": 0.5},
                                         hovertemplate=f"random seed<br>alpha %{{x}}<br>{label} = "
                                                       "%{y:.3f}<extra></extra>"),
                              row=1, col=col)
        if len(base):
            fig.add_hline(y=float(base[key].iloc[0]), line_dash="dot", row=1, col=col)
        fig.update_xaxes(title_text="alpha", row=1, col=col)
        fig.update_yaxes(range=[0, 1], row=1, col=col)
    fig.update_layout(title=title or None)
    return fig
