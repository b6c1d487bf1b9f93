"""Circuits: circuit graphs from runs with circuit_nodes / circuit_edges tables; compare two."""

from __future__ import annotations

import common
import streamlit as st

from interp.io.circuit_tables import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    compare_circuits,
    extent,
    find_circuits,
)
from interp.viz.workbench import circuit_graph

common.page("Circuits", ":material/hub:")
st.title("Circuits")


def main() -> None:

    with common.guard("Reading the circuits"):
        circuits, notes = find_circuits(common.store())
        common.show_notes(notes, "circuit run(s)")
        if not circuits:
            st.info(
                f"No run in `{common.runs_dir()}` holds a circuit yet. Circuit analyses write two tables "
                f"into their run: **circuit_nodes** ({', '.join(NODE_COLUMNS)}) and **circuit_edges** "
                f"({', '.join(EDGE_COLUMNS)}); such runs appear here as graphs."
            )
            st.stop()

        by_id = {c.run_id: c for c in circuits}
        ids = list(by_id)
        c = st.columns([2, 2, 1])
        a_id = c[0].selectbox("Circuit", ids, key="circ_a", format_func=lambda i: by_id[i].label)
        a = by_id[a_id]
        others = ["(none)", *[i for i in ids if i != a_id]]
        b_id = c[1].selectbox("Compare with", others, key="circ_b",
                              format_func=lambda i: i if i == "(none)" else by_id[i].label)
        b = by_id.get(b_id)
        drop_isolated = c[2].toggle("Hide heads without edges", key="circ_isolated",
                                    help="Hide heads that have no edge above the threshold")
        top_strength = max(a.max_strength, b.max_strength if b else 0.0)
        threshold = st.slider("Edge threshold |strength| >=", 0.0, float(top_strength or 1.0), 0.0,
                              step=float(top_strength or 1.0) / 100, key="circ_threshold", format="%.3f")

        fa = a.filter(threshold, drop_isolated)
        if b is None:
            st.plotly_chart(circuit_graph(fa.nodes, fa.edges, title=a.label), width="stretch", key="circ_graph_a")
            st.caption(f"{len(fa.nodes)} heads, {len(fa.edges)} of {len(a.edges)} edges with |strength| >= "
                       f"{threshold:.3g}. Edge width ~ |strength|; blue positive, red negative; solid q, "
                       "dashed k, dotted v input. Node size ~ |score|.")
        else:
            if a.model != b.model:
                st.warning(f"The circuits are of different models ({a.model} vs {b.model}); heads are "
                           "compared by (layer, head) only.")
            cmp = compare_circuits(a, b, threshold)
            m = st.columns(4)
            m[0].metric("Shared heads", len(cmp.shared))
            m[1].metric("Head Jaccard", f"{cmp.node_jaccard:.2f}", help="|A and B| / |A or B| over heads")
            m[2].metric("Shared edges", cmp.shared_edges)
            m[3].metric("Edge Jaccard", f"{cmp.edge_jaccard:.2f}", help="over edges with |strength| >= threshold")
            fb = b.filter(threshold, drop_isolated)
            shared = set(cmp.shared)
            g1, g2 = st.columns(2)
            n_layers, n_heads = extent(a, b)
            g1.plotly_chart(circuit_graph(fa.nodes, fa.edges, highlight=shared, title=f"A: {a.label}",
                                          n_layers=n_layers, n_heads=n_heads),
                            width="stretch", key="circ_graph_a")
            g2.plotly_chart(circuit_graph(fb.nodes, fb.edges, highlight=shared, title=f"B: {b.label}",
                                          n_layers=n_layers, n_heads=n_heads),
                            width="stretch", key="circ_graph_b")
            st.caption("Heads in both circuits have a thick black ring.")
            with st.expander("Heads in A, B or both"):
                st.dataframe(cmp.to_frame(), hide_index=True, width="stretch")

        t1, t2 = st.columns([2, 3])
        with t1:
            st.markdown(f"**Nodes of {a.run_id}**")
            st.dataframe(fa.nodes, hide_index=True, width="stretch")
        with t2:
            st.markdown(f"**Edges of {a.run_id}** (|strength| >= {threshold:.3g})")
            st.dataframe(fa.edges, hide_index=True, width="stretch")


with common.guard("This page"):
    main()
