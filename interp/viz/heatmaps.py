"""Result frames -> plotly figures: layer x head maps, per-position maps, DLA bars.

Input is a tidy DataFrame as returned by a result's `.to_frame()` (one row per layer/head/
position); the only work done here is pivoting and sorting. Conventions shared by every map:
layer 0 at the top (as in a model diagram read top-down), a diverging RdBu scale centred on 0
(blue = the patch/component helps the metric, red = it hurts), and hover text with the
coordinates and the value.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
    ...                    "normalised": [0.1, -0.2, 0.9, 0.0]})
    >>> fig = head_heatmap(df)
    >>> fig.data[0].z.shape
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["head_heatmap", "position_heatmap", "dla_bar", "layer_head_table"]

COLORSCALE = "RdBu"
_POSITIVE, _NEGATIVE = "#2166ac", "#b2182b"  # the ends of RdBu


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} needs columns {list(columns)}; missing {missing}, got {list(df.columns)}"
        )


def _pivot(df: pd.DataFrame, index: str, columns: str, value: str, what: str) -> pd.DataFrame:
    if df.duplicated([index, columns]).any():
        raise ValueError(
            f"{what}: several rows share the same ({index}, {columns}); filter the frame "
            "(e.g. to one prompt or component) or aggregate it first"
        )
    return df.pivot(index=index, columns=columns, values=value).sort_index().sort_index(axis=1)


def head_heatmap(df: pd.DataFrame, value: str = "normalised", title: str = "") -> go.Figure:
    """Layer (y, 0 at top) x head (x) heatmap of `value`, coloured RdBu around 0."""
    _require(df, ["layer", "head", value], "head_heatmap")
    grid = _pivot(df, "layer", "head", value, "head_heatmap")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(dtype=float),
            x=grid.columns.tolist(),
            y=grid.index.tolist(),
            colorscale=COLORSCALE,
            zmid=0,
            colorbar={"title": {"text": value}},
            hovertemplate=f"layer %{{y}}<br>head %{{x}}<br>{value} = %{{z:.4g}}<extra></extra>",
        )
    )
    fig.update_layout(title=title or None, xaxis_title="head", yaxis_title="layer")
    fig.update_xaxes(dtick=1)  # heads are integers (4 heads would otherwise get ticks at 0.5)
    fig.update_yaxes(autorange="reversed")
    return fig


def position_heatmap(
    df: pd.DataFrame,
    value: str = "normalised",
    token_labels: list[str] | None = None,
    title: str = "",
) -> go.Figure:
    """Layer (y) x position (x) heatmaps, one panel per `component`, on one shared colour scale.

    `token_labels[i]` labels position i; repeated tokens stay distinct because the axis is
    numeric with tick text, not categorical.
    """
    _require(df, ["layer", "position", value], "position_heatmap")
    if "component" not in df.columns:
        df = df.assign(component=value)
    components = list(dict.fromkeys(df["component"]))  # first-seen order
    positions = sorted(df["position"].unique())
    if token_labels is not None and positions and max(positions) >= len(token_labels):
        raise ValueError(
            f"position_heatmap: {len(token_labels)} token labels for positions up to "
            f"{max(positions)}; give one label per position"
        )
    fig = make_subplots(
        rows=1,
        cols=len(components),
        shared_yaxes=True,
        subplot_titles=[str(c) for c in components],
        horizontal_spacing=0.03,
    )
    for col, component in enumerate(components, start=1):
        part = df[df["component"] == component]
        grid = _pivot(part, "layer", "position", value, f"position_heatmap ({component})")
        xs = grid.columns.tolist()
        labels = [token_labels[p] if token_labels is not None else str(p) for p in xs]
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(dtype=float),
                x=xs,
                y=grid.index.tolist(),
                coloraxis="coloraxis",
                text=np.tile(np.array(labels, dtype=object), (len(grid.index), 1)),
                hovertemplate=(
                    f"{component}<br>layer %{{y}}<br>position %{{x}} (%{{text}})<br>"
                    f"{value} = %{{z:.4g}}<extra></extra>"
                ),
                name=str(component),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(
            title_text="position", tickmode="array", tickvals=xs, ticktext=labels, row=1, col=col
        )
    fig.update_yaxes(autorange="reversed", title_text="layer", row=1, col=1)
    fig.update_layout(
        title=title or None,
        coloraxis={"colorscale": COLORSCALE, "cmid": 0, "colorbar": {"title": {"text": value}}},
    )
    return fig


def dla_bar(df: pd.DataFrame, top_k: int = 20, title: str = "") -> go.Figure:
    """Horizontal bars of the `top_k` `contribution`s by absolute value, largest at the top."""
    _require(df, ["label", "contribution"], "dla_bar")
    if df["label"].duplicated().any():
        raise ValueError("dla_bar: labels must be unique; filter the frame to one prompt first")
    top = layer_head_table(df, "contribution", top_k).iloc[::-1]  # plotly draws bottom-up
    values = top["contribution"].to_numpy(dtype=float)
    fig = go.Figure(
        go.Bar(
            x=values,
            y=top["label"].astype(str).tolist(),
            orientation="h",
            marker_color=[_POSITIVE if v >= 0 else _NEGATIVE for v in values],
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or None,
        xaxis_title="contribution",
        yaxis={"type": "category"},
        height=max(300, 22 * len(top) + 120),
    )
    return fig


def layer_head_table(df: pd.DataFrame, value: str, top_k: int) -> pd.DataFrame:
    """The `top_k` rows with the largest |value| (NaN last), all columns kept."""
    _require(df, [value], "layer_head_table")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    order = df[value].abs().sort_values(ascending=False, na_position="last", kind="stable")
    return df.loc[order.index[:top_k]].reset_index(drop=True)
