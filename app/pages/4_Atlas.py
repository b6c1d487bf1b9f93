"""Atlas: every per-head score of a model in one sortable, filterable table; correlations;
the same score on a second model side by side, by relative depth."""

from __future__ import annotations

import common
import streamlit as st

from interp.io.compare import CompareError, compare_atlas
from interp.viz.compare import compare_head_maps, depth_profile_chart
from interp.viz.workbench import correlation_heatmap

common.page("Atlas", ":material/menu_book:")
st.title("Head atlas")


def main() -> None:
    st.caption("One row per head, one column per score found in the run store; each score comes from "
               "the newest complete run that has it (see Provenance).")

    grid = common.grid_picker("atlas_grid")  # one grid's runs together, or all runs
    atlas = common.atlas(grid)
    if atlas is None:
        st.stop()
    common.show_notes(atlas.notes, "run(s) or table(s)")
    if not atlas.models:
        st.info("The atlas is empty: no complete run holds per-head scores yet. Run "
                "`interp run experiments/ioi.yaml` or save a live analysis, then come back.")
        st.stop()

    with common.guard("Showing the atlas"):
        c = st.columns([1, 2])
        # the bundled default model first, when the store has it (most runs are on it)
        models = sorted(atlas.models, key=lambda m: (m != "smollm2-135m", m))
        model = c[0].selectbox("Model", models, key="atlas_model")
        sub = atlas.for_model(model)
        all_scores = sub.scores()
        chosen = c[1].multiselect("Scores", all_scores, default=all_scores, key=f"atlas_scores_{model}")
        layers = sorted(sub.table["layer"].unique().tolist())
        f = st.columns([2, 2, 1])
        lo, hi = int(layers[0]), int(layers[-1])
        layer_range = (lo, hi)
        if lo < hi:
            layer_range = f[0].slider("Layers", lo, hi, (lo, hi), key=f"atlas_layers_{model}")
        sort_by = f[1].selectbox("Sort by |score|", [*chosen, "(layer, head)"], key=f"atlas_sort_{model}",
                                 help="Largest |value| first; or click a column header of the table")
        top = f[2].number_input("Show top", 1, max(1, len(sub.table)), min(50, len(sub.table)),
                                key=f"atlas_top_{model}")
        view = atlas.select(model, scores=chosen, layers=tuple(layer_range),
                            sort_by=None if sort_by == "(layer, head)" else sort_by, top=int(top))
        st.dataframe(view, hide_index=True, width="stretch", height=420,
                     column_config={s: st.column_config.NumberColumn(format="%.4g") for s in chosen})
        st.caption(f"{len(view)} of {len(sub.table)} heads · click a column header to sort")
        st.download_button("atlas CSV", sub.to_frame().to_csv(index=False).encode(),
                           file_name=f"atlas-{model}.csv", mime="text/csv", icon=":material/download:", key="atlas_dl")

        st.subheader("How the scores agree")
        if len(chosen) < 2:
            st.info("Correlations need at least two scores for this model; pick more above, or add runs "
                    "with other analyses.")
        else:
            g1, g2 = st.columns(2)
            corr = sub.correlations().loc[chosen, chosen]
            g1.plotly_chart(correlation_heatmap(corr, title="Spearman rank correlation over heads"),
                            width="stretch", key="atlas_corr")
            k = g2.slider("k for the top-k overlap", 1, max(2, len(sub.table)), min(10, len(sub.table)),
                          key=f"atlas_k_{model}")
            overlap = sub.top_k_overlap(int(k)).loc[chosen, chosen]
            g2.plotly_chart(correlation_heatmap(overlap, title=f"Shared top-{k} heads (by |score|)", zrange=(0, 1)),
                            width="stretch", key="atlas_overlap")

        st.subheader("Provenance")
        st.dataframe(sub.provenance, hide_index=True, width="stretch")

    with common.guard("Comparing the models"):
        compare_section(atlas, model)


def compare_section(atlas, model: str) -> None:
    st.subheader("Compare with another model")
    st.caption("The same score on two models, heads placed by relative depth = layer / (n_layers - 1), so "
               "models of different depths line up (0 = first layer, 1 = last). Retrieval scores count "
               "heads above 0.1 (the retrieval-head rule).")
    others = [m for m in atlas.models if m != model]
    if not others:
        st.info(f"Only {model} has per-head scores in the run store. Run the same experiment on a second "
                "model (e.g. `interp run experiments/retrieval_heads.yaml --set model.name=gemma3-270m`) "
                "to compare them here.")
        return
    c = st.columns([1, 2, 1])
    other = c[0].selectbox("Second model", others, key=f"cmp_other_{model}")
    try:
        result = compare_atlas(atlas, model, other, k=10)
    except CompareError as exc:
        st.info(str(exc))
        return
    score = c[1].selectbox("Score", result.scores, key=f"cmp_score_{model}_{other}",
                           help=f"Scores both models have; only {model}: {', '.join(result.only_a) or 'none'}; "
                                f"only {other}: {', '.join(result.only_b) or 'none'}")
    most = int(result.summary["n_heads"].max())
    k = int(c[2].number_input("Top k", 1, max(1, most), min(10, most), key=f"cmp_k_{model}_{other}"))
    if k != result.k:
        result = compare_atlas(atlas, model, other, score, k=k)
    st.plotly_chart(compare_head_maps(result.heads(score), title=f"{score}: top-{k} heads outlined", top_k=k),
                    width="stretch", key="cmp_maps")
    g = st.columns([3, 2])
    g[0].dataframe(result.side_by_side(score), width="stretch", height=420)
    stat = g[1].radio("Depth profile", ["mean", "mean_abs"], horizontal=True, key="cmp_profile_stat",
                      format_func=lambda v: {"mean": "mean score", "mean_abs": "mean |score|"}[v],
                      help="Signed scores (IOI patching, memory/context heads) cancel in the mean; |score| does not")
    g[1].plotly_chart(depth_profile_chart(result.depth_profile(score), value=stat,
                                          title=f"{'Mean' if stat == 'mean' else 'Mean |score|'} per depth bin (0.1)"),
                      width="stretch", key="cmp_profile")
    with st.expander(f"Every score both models have ({len(result.scores)})"):
        st.dataframe(result.summary, hide_index=True, width="stretch")
    st.download_button("comparison CSV (one row per head)", result.frame.to_csv(index=False).encode(),
                       file_name=f"compare-{model}-{other}.csv", mime="text/csv", icon=":material/download:",
                       key="cmp_dl")


with common.guard("This page"):
    main()
