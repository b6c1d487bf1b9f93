"""interp workbench: start page. Run with `interp app` (or `streamlit run app/Home.py`)."""

from __future__ import annotations

import common
import streamlit as st

common.page("Workbench", ":material/biotech:")

st.title("interp workbench")


def main() -> None:
    st.markdown(
        "Browse the runs of your experiments, find the heads that matter on a **layer x head map**, "
        "inspect one head (its scores across analyses, attention pattern, direct logit attribution), "
        "compare circuits, and patch a prompt of your own **live**."
    )

    runs = common.list_runs()
    st.caption(f"Run store: `{common.runs_dir().resolve()}`")
    if runs.empty:
        common.no_runs_message()
    else:
        counts = runs["status"].fillna("unknown").value_counts()
        c = st.columns(4)
        c[0].metric("Runs", len(runs))
        c[1].metric("Complete", int(counts.get("complete", 0)))
        bad = sum(int(counts.get(s, 0)) for s in ("failed", "interrupted", "unreadable", "invalid"))
        c[2].metric("Failed / unreadable", bad, help="failed, interrupted, unreadable or invalid manifest")
        c[3].metric("Models", runs["model"].dropna().nunique())
        st.subheader("Latest runs")
        st.dataframe(runs[["run_id", "experiment", "model", "created", "status"]].head(5),
                     hide_index=True, width="stretch")

    st.subheader("Pages")
    pages = [
        ("pages/1_Runs.py", "Runs", ":material/list_alt:", "every run: config, manifest, figures, tables, report"),
        ("pages/2_Head_maps.py", "Head maps", ":material/grid_on:",
         "per-head results as layer x head maps; click a head for its details"),
        ("pages/3_Circuits.py", "Circuits", ":material/hub:",
         "circuit graphs from circuit analyses; compare two circuits"),
        ("pages/4_Atlas.py", "Atlas", ":material/menu_book:",
         "every per-head score of a model in one table, with correlations"),
        ("pages/5_Live_analysis.py", "Live analysis", ":material/bolt:",
         "head patching and DLA on your own prompt pair"),
    ]
    for path, label, icon, what in pages:
        col1, col2 = st.columns([1, 4])
        with col1:
            st.page_link(path, label=label, icon=icon)
        col2.markdown(what)

    with st.expander("Getting started"):
        st.markdown(
            "1. `interp run experiments/ioi.yaml` runs the IOI study on SmolLM2-135M (a few minutes "
            "on a CPU) and writes a run into `runs/`.\n"
            "2. **Head maps**: pick the run; the map shows each head's patching effect (1 = the head "
            "alone restores the clean answer). The top heads are the IOI circuit's name movers; "
            "click one to see what it attends to.\n"
            "3. **Live analysis**: load a model, type a clean and a corrupt prompt of equal token "
            "length and two one-token answers, and patch every head in seconds."
        )


with common.guard("This page"):
    main()
