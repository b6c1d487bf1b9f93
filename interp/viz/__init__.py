"""Result frames -> plotly figures (no computation)."""

from interp.viz.heatmaps import dla_bar, head_heatmap, layer_head_table, position_heatmap

__all__ = ["dla_bar", "head_heatmap", "layer_head_table", "position_heatmap"]
