"""Speech explanation figures: maps over the spectrogram, correlation by layer, deletion curves.

Inputs are arrays and tidy frames produced by the analyses (`interp.analyses.cross_attention`,
`saliency`, `speech_compare`); nothing is computed here beyond display scaling: each map row
(one output token) is scaled to its own maximum, so maps of different units (attention weights,
KL divergences, |IG|) share one colour scale and are read by where they peak.

    fig = maps_over_spectrogram(spec, {"cross-attention (all)": ca, "SPES": s}, tokens)
    fig = correlation_by_layer(corr.summary())
    fig = deletion_curves_figure(dl.curves())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["correlation_by_layer", "deletion_curves_figure", "maps_over_spectrogram"]


def _row_scaled(m: np.ndarray) -> np.ndarray:
    top = np.abs(m).max(axis=1, keepdims=True)
    return np.divide(m, top, out=np.zeros_like(m, dtype=float), where=top > 0)


def maps_over_spectrogram(
    spectrogram: np.ndarray,
    maps: Mapping[str, np.ndarray],
    tokens: Sequence[str],
    *,
    mel_frame_seconds: float = 0.01,
    frame_seconds: float = 0.02,
    title: str = "",
) -> go.Figure:
    """The log-mel spectrogram (mel x mel_frame) on top, then one (token x frame) map per entry,
    all on one time axis in seconds."""
    if spectrogram.ndim != 2:
        raise ValueError(f"spectrogram must be (mel, frame), got shape {spectrogram.shape}")
    for name, m in maps.items():
        if m.ndim != 2 or m.shape[0] != len(tokens):
            raise ValueError(f"map {name!r} must be (token, frame) with {len(tokens)} tokens, got {m.shape}")
    n = 1 + len(maps)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=["log-mel spectrogram", *maps])
    t_mel = np.arange(spectrogram.shape[1]) * mel_frame_seconds
    fig.add_trace(go.Heatmap(z=spectrogram, x=t_mel, y=np.arange(spectrogram.shape[0]), colorscale="Viridis",
                             showscale=False, hovertemplate="t %{x:.2f} s<br>mel %{y}<br>%{z:.2f}<extra></extra>"),
                  row=1, col=1)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]  # distinct labels for repeated tokens
    for row, (name, m) in enumerate(maps.items(), start=2):
        t = (np.arange(m.shape[1]) + 0.5) * frame_seconds
        fig.add_trace(go.Heatmap(z=_row_scaled(np.asarray(m, dtype=float)), x=t, y=labels, colorscale="Blues",
                                 zmin=0, zmax=1, showscale=row == 2, colorbar={"title": {"text": "per-token max = 1"}},
                                 hovertemplate=f"{name}<br>t %{{x:.2f}} s<br>%{{y}}<br>%{{z:.3f}}<extra></extra>"),
                      row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    fig.update_xaxes(title_text="time (s)", row=n, col=1)
    fig.update_layout(title=title or None, height=220 + 200 * n)
    return fig


def correlation_by_layer(summary: pd.DataFrame, value: str = "pearson", title: str = "") -> go.Figure:
    """Mean `value` per aggregation (layers, all, last layers; heads left out), one line per
    saliency method: rows of `CorrelationResult.summary()`."""
    need = ["saliency", "aggregation", "kind", value]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise ValueError(f"correlation_by_layer needs columns {need}; missing {missing}")
    part = summary[summary["kind"] != "head"]
    fig = go.Figure()
    for method, g in part.groupby("saliency", sort=False):
        fig.add_trace(go.Scatter(x=g["aggregation"], y=g[value], mode="lines+markers", name=str(method),
                                 hovertemplate=f"{method}<br>%{{x}}: {value} = %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title or None, xaxis_title="cross-attention aggregation", yaxis_title=value)
    return fig


def deletion_curves_figure(curves: pd.DataFrame, value: str = "wer_transcript", title: str = "") -> go.Figure:
    """WER after removing the top fraction of frames, one line per map (`DeletionResult.curves()`)."""
    need = ["map", "fraction", value]
    missing = [c for c in need if c not in curves.columns]
    if missing:
        raise ValueError(f"deletion_curves_figure needs columns {need}; missing {missing}")
    fig = go.Figure()
    for name, g in curves.groupby("map", sort=False):
        g = g.sort_values("fraction")
        fig.add_trace(go.Scatter(x=g["fraction"] * 100, y=g[value], mode="lines+markers", name=str(name),
                                 line={"dash": "dot"} if name == "random" else None,
                                 hovertemplate=f"{name}<br>%{{x:.0f}}% removed: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title or None, xaxis_title="audio frames removed, most relevant first (%)",
                      yaxis_title=value.replace("_", " ") + " (clipped at 1)")
    return fig
