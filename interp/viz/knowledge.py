"""Knowledge-conflict frames -> plotly figures: answer shares per relation, PH3 before/after.

Inputs are the tidy frames of `ConflictRates.by_relation()` and `PH3Result.summary()`; nothing
is computed here beyond picking columns.

    fig = rates_bars(rates.by_relation(), title="memory vs context")
    fig = ph3_bars(ph3.summary())
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["rates_bars", "ph3_bars"]

_COLORS = {"memory": "#2166ac", "context": "#b2182b", "other": "#bbbbbb"}


def rates_bars(by_relation: pd.DataFrame, title: str = "") -> go.Figure:
    """Stacked bars per relation: the share of prompts answered with o_m, o_c or other."""
    fig = go.Figure()
    for outcome, color in _COLORS.items():
        fig.add_trace(
            go.Bar(
                x=by_relation["relation"],
                y=by_relation[f"{outcome}_rate"],
                name=outcome,
                marker_color=color,
                customdata=by_relation["n_prompts"],
                hovertemplate=f"%{{x}}<br>{outcome} rate %{{y:.2f}} of %{{customdata}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", title=title or None, yaxis_title="share of prompts")
    return fig


def ph3_bars(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """Memory-rate and context-rate per pruning condition and k (error bars: std over the
    random-head seeds)."""
    df = summary.copy()
    df["label"] = [
        c if k == 0 else f"{c} k={k}" for c, k in zip(df["condition"], df["k"], strict=True)
    ]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["memory-rate", "context-rate"], shared_yaxes=True
    )
    for col, rate in ((1, "memory_rate"), (2, "context_rate")):
        colors = [
            "#777777"
            if c == "none"
            else (
                "#999999"
                if c.startswith("random")
                else _COLORS["context" if "context" in c else "memory"]
            )
            for c in df["condition"]
        ]
        fig.add_trace(
            go.Bar(
                x=df["label"],
                y=df[rate],
                error_y={
                    "type": "data",
                    "array": df.get(f"{rate}_std", pd.Series(0, index=df.index)).fillna(0),
                },
                marker_color=colors,
                showlegend=False,
                hovertemplate=f"%{{x}}<br>{rate} %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="share of held-out prompts", row=1, col=1)
    fig.update_layout(title=title or None)
    return fig
