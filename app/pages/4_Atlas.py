"""Atlas: every per-head score of a model in one sortable, filterable table; correlations."""

from __future__ import annotations

import common
import streamlit as st

from interp.viz.workbench import correlation_heatmap

common.page("Atlas", ":material/menu_book:")
st.title("Head atlas")


def main() -> None:
    st.caption("One row per head, one column per score found in the run store; each score comes from "
               "the newest complete run that has it (see Provenance).")

    atlas = common.atlas()
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
        top = f[2].number_input("Show top", 1, max(1, len(sub.table)), min(50, len(sub.table)), key=f"atlas_top_{model}")
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


with common.guard("This page"):
    main()
