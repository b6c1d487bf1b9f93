"""Two models side by side on a shared relative-depth axis (frames from `interp.io.compare`).

Like `heatmaps`, each function only arranges a tidy frame; no computation beyond pivoting.

    result = compare_models("runs", "smollm2-135m", "gemma3-270m", score="retrieval.niah")
    fig = compare_head_maps(result.heads("retrieval.niah"), title="retrieval.niah", top_k=10)
    fig = depth_profile_chart(result.depth_profile("retrieval.niah"))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.viz.heatmaps import COLORSCALE, _require

__all__ = ["compare_head_maps", "depth_profile_chart"]

_MODEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def _models(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["model"].tolist()))


def compare_head_maps(
    df: pd.DataFrame, value: str = "value", title: str = "", top_k: int | None = None
) -> go.Figure:
    """One head map per model (x = head, y = relative depth, 0 at the top), side by side on a
    shared y axis and one colour scale (RdBu around 0, symmetric over both models), so a head
    at 40% depth sits at the same height in both. `df`: model, layer, head, relative_depth,
    `value` (and rank: with `top_k`, the top-k heads of each model get an outline)."""
    _require(df, ["model", "layer", "head", "relative_depth", value], "compare_head_maps")
    models = _models(df)
    if not models:
        raise ValueError("compare_head_maps: the frame has no rows")
    vmax = float(df[value].abs().max())
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    fig = make_subplots(rows=1, cols=len(models), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=models)
    pad = 0.0
    for i, model in enumerate(models, start=1):
        part = df[df["model"] == model]
        if part.duplicated(["layer", "head"]).any():
            raise ValueError(f"compare_head_maps: {model} has several rows per (layer, head); "
                             "pass one score's heads")
        grid = part.pivot(index="layer", columns="head", values=value).sort_index().sort_index(axis=1)
        depth = part.drop_duplicates("layer").set_index("layer")["relative_depth"].reindex(grid.index)
        layers = np.repeat(grid.index.to_numpy()[:, None], grid.shape[1], axis=1)
        if len(depth) > 1:
            pad = max(pad, float(np.diff(depth.to_numpy()).max()) / 2)
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(dtype=float), x=grid.columns.tolist(), y=depth.tolist(),
                coloraxis="coloraxis", customdata=layers, name=model,
                hovertemplate=(f"{model}<br>L%{{customdata}}H%{{x}}<br>relative depth %{{y:.2f}}"
                               f"<br>{value} = %{{z:.4g}}<extra></extra>"),
            ),
            row=1, col=i,
        )
        if top_k is not None and "rank" in part.columns:
            top = part[part["rank"] <= top_k]
            fig.add_trace(
                go.Scatter(
                    x=top["head"].tolist(), y=top["relative_depth"].tolist(), mode="markers",
                    marker={"symbol": "square-open", "size": 14, "color": "black", "line": {"width": 2}},
                    name=f"top-{top_k} ({model})", showlegend=False, hoverinfo="skip",
                ),
                row=1, col=i,
            )
        n_heads = int(part["head"].max()) + 1
        fig.update_xaxes(title_text="head", dtick=1 if n_heads <= 16 else 2,
                         range=[-0.5, n_heads - 0.5], row=1, col=i)
    pad = max(pad, 0.02)
    fig.update_yaxes(range=[1 + pad, -pad], autorange=False, dtick=0.1, tickformat=".1f")
    fig.update_yaxes(title_text="relative depth (layer / (n_layers - 1))", row=1, col=1)
    fig.update_layout(
        title=title or None, height=620, margin={"t": 80},
        coloraxis={"colorscale": COLORSCALE, "cmin": -vmax, "cmax": vmax, "cmid": 0,
                   "colorbar": {"title": {"text": value}}},
    )
    return fig


def depth_profile_chart(profile: pd.DataFrame, value: str = "mean", title: str = "") -> go.Figure:
    """`value` per relative-depth bin, one line per model (bins without heads are gaps).
    `profile`: model, depth_lo, depth_hi, `value`, n_heads (`CompareResult.depth_profile`)."""
    _require(profile, ["model", "depth_lo", "depth_hi", value], "depth_profile_chart")
    fig = go.Figure()
    for i, model in enumerate(_models(profile)):
        part = profile[profile["model"] == model].sort_values("depth_lo")
        centre = (part["depth_lo"] + part["depth_hi"]) / 2
        n = part["n_heads"] if "n_heads" in part.columns else pd.Series(np.nan, index=part.index)
        fig.add_trace(go.Scatter(
            x=centre.tolist(), y=part[value].astype(float).tolist(), mode="lines+markers", name=model,
            line={"color": _MODEL_COLOURS[i % len(_MODEL_COLOURS)]}, connectgaps=False,
            customdata=np.stack([part["depth_lo"], part["depth_hi"], n], axis=1),
            hovertemplate=(f"{model}<br>depth %{{customdata[0]:.1f}}-%{{customdata[1]:.1f}}"
                           f"<br>{value} = %{{y:.4g}}<br>%{{customdata[2]}} heads<extra></extra>"),
        ))
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    fig.update_layout(title=title or None, xaxis_title="relative depth", yaxis_title=value,
                      legend={"orientation": "h", "y": -0.2}, height=360)
    fig.update_xaxes(range=[0, 1], dtick=0.1, tickformat=".1f")
    return fig
