"""Runs: the run store as a filterable list; one run's config, manifest, figures, tables, report."""

from __future__ import annotations

import json

import common
import streamlit as st
import streamlit.components.v1 as components
import yaml

from interp.io.report import REPORT_FILE
from interp.io.runstore import effective_status
from interp.viz import dla_bar, head_heatmap, position_heatmap

common.page("Runs", ":material/list_alt:")
st.title("Runs")


def row_opener(ids: list[str]):
    """An `on_select` callback: the selected row (of the table as shown) opens that run."""

    def callback() -> None:
        rows = st.session_state["runs_table"].selection.rows
        if rows and rows[0] < len(ids):
            st.session_state["runs_open"] = ids[rows[0]]

    return callback


def _show_accuracy(run) -> None:
    if not (run.path / "accuracy.json").is_file():
        return
    with common.guard("Reading accuracy.json"):
        acc = json.loads((run.path / "accuracy.json").read_text(encoding="utf-8"))
        c = st.columns(4)
        c[0].metric("Top-1 accuracy", f"{acc.get('top1_accuracy', float('nan')):.0%}")
        c[1].metric("Logit diff > 0", f"{acc.get('logit_diff_positive_rate', float('nan')):.0%}")
        c[2].metric("Clean logit diff", f"{acc.get('mean_clean_logit_diff', float('nan')):.2f}")
        c[3].metric("Corrupt logit diff", f"{acc.get('mean_corrupt_logit_diff', float('nan')):.2f}")


def _draw_head_patching(df) -> None:
    direction = df["direction"].iloc[0] if "direction" in df.columns and len(df) else ""
    st.plotly_chart(head_heatmap(df, "normalised", title=f"Head output patching ({direction}, normalised)"),
                    width="stretch", key="runs_fig_hp")


def _draw_dla(df) -> None:
    c1, c2 = st.columns(2)
    c1.plotly_chart(dla_bar(df, top_k=20, title="Direct logit attribution (top 20)"),
                    width="stretch", key="runs_fig_dla")
    heads = df[df["kind"] == "head"]
    c2.plotly_chart(head_heatmap(heads, "contribution", title="DLA per head"),
                    width="stretch", key="runs_fig_dla_heads")


def _draw_residual(df) -> None:
    labels = None
    if "token" in df.columns:
        labels = df.drop_duplicates("position").sort_values("position")["token"].astype(str).tolist()
    st.plotly_chart(position_heatmap(df, "normalised", token_labels=labels,
                                     title="Residual stream / attention / MLP patching (normalised)"),
                    width="stretch", key="runs_fig_resid")


# The standard figures: (table, what is drawn, how), in page order.
_STANDARD = [
    ("head_patching", "Drawing the head patching map", _draw_head_patching),
    ("dla", "Drawing the DLA figures", _draw_dla),
    ("residual_patching", "Drawing the residual patching map", _draw_residual),
]


def _saved_figures(run) -> None:
    saved = run.figures()
    if not saved:
        return
    st.markdown("**Saved figures** (standalone HTML, open offline)")
    cols = st.columns(min(4, len(saved)))
    for i, name in enumerate(saved):
        cols[i % len(cols)].download_button(
            f"{name}.html", common.figure_bytes(run, name), on_click="ignore",
            file_name=f"{run.run_id}-{name}.html", mime="text/html", icon=":material/download:",
            key=f"runs_dl_fig_{name}")


def show_summary(run) -> None:
    _show_accuracy(run)
    tables = run.tables()
    shown_any = False
    for table, what, draw in _STANDARD:
        df = common.read_table(run, table) if table in tables else None
        if df is not None:
            with common.guard(what):
                draw(df)
                shown_any = True
    if not shown_any:
        st.info("This run has no table with a standard figure (head_patching, dla, residual_patching); "
                "see the Tables tab.")
    _saved_figures(run)


def show_tables(run) -> None:
    tables = run.tables()
    if not tables:
        st.info("This run has no tables.")
        return
    name = st.selectbox("Table", tables, key=f"runs_table_pick_{run.run_id}")
    df = common.read_table(run, name)
    if df is not None:
        st.caption(f"{len(df)} rows · {', '.join(map(str, df.columns))}")
        st.dataframe(df, hide_index=True, width="stretch", height=420)
        st.download_button("CSV", df.to_csv(index=False).encode(), file_name=f"{run.run_id}-{name}.csv",
                           mime="text/csv", icon=":material/download:", key=f"runs_dl_csv_{run.run_id}_{name}")


def _run_header(run, manifest: dict) -> None:
    """Status, model, dates and size of the run; a failed or interrupted run says so."""
    status = effective_status(run.path, manifest)
    c = st.columns(5)
    c[0].metric("Status", str(status or "-"))
    c[1].metric("Model", str(manifest.get("model_id", "-")))
    created = str(manifest.get("created_at") or "-")
    c[2].metric("Created", created[:10], help=created)
    duration = manifest.get("duration_s")
    c[3].metric("Duration", f"{duration:.1f} s" if isinstance(duration, int | float) else "-")
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    c[4].metric("Prompts", str(dataset.get("n", "-")))
    if status == "failed":
        st.error(f"This run failed: {manifest.get('error') or 'no error recorded'}. "
                 "The analyses it finished are shown below.")
    elif status == "interrupted":
        why = manifest.get("error") or "its process is gone (killed?) or stopped writing its heartbeat"
        st.warning(f"This run was interrupted: {why}. The analyses it finished are shown below.")


def _show_report(report) -> None:
    if not report.is_file():
        st.info("This run has no report.html.")
    elif st.toggle("Show report.html here (it is large: plotly is inlined)", key="runs_show_report"):
        components.html(report.read_text(encoding="utf-8", errors="replace"), height=900, scrolling=True)
    else:
        st.caption("Or download it above; it opens offline in any browser.")


def show_run(run_id: str) -> None:
    opened = common.open_run(run_id)
    if opened is None:
        return
    run, manifest = opened
    st.header(run.run_id)
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    if config.get("description"):
        st.markdown(f"*{config['description']}*")
    _run_header(run, manifest)
    links = st.columns([1, 1, 1, 3])
    report = run.path / REPORT_FILE
    if report.is_file():
        links[0].download_button("report.html", common.file_bytes(report), on_click="ignore",
                                 file_name=f"{run.run_id}-report.html",
                                 mime="text/html", icon=":material/download:", key="runs_dl_report")
    links[1].page_link("pages/2_Head_maps.py", label="Head maps", icon=":material/grid_on:",
                       query_params={"run": run.run_id})
    links[2].download_button("manifest.json", json.dumps(manifest, indent=2), file_name=f"{run.run_id}-manifest.json",
                             mime="application/json", icon=":material/download:", key="runs_dl_manifest")
    st.caption(f"Directory: `{run.path}`"
               + (f" · experiment `{manifest['experiment']}`" if manifest.get("experiment") else ""))

    tab_sum, tab_tables, tab_cfg, tab_man, tab_rep = st.tabs(["Summary", "Tables", "Config", "Manifest", "Report"])
    with tab_sum, common.guard("Showing the summary"):
        show_summary(run)
    with tab_tables, common.guard("Showing the tables"):
        show_tables(run)
    with tab_cfg:
        st.code(yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else "# no config recorded",
                language="yaml")
    with tab_man:
        st.json(manifest, expanded=1)
    with tab_rep:
        _show_report(report)


def main() -> None:
    st.caption(f"Run store: `{common.runs_dir().resolve()}`")

    runs = common.list_runs()
    if runs.empty:
        common.no_runs_message()
        st.stop()

    # --- the list -----------------------------------------------------------------------------
    f1, f2, f3 = st.columns([2, 1, 1])
    text = f1.text_input("Filter", key="runs_filter", placeholder="run id, experiment, model...")
    statuses = f2.multiselect("Status", sorted(runs["status"].dropna().unique()), key="runs_status")
    models = f3.multiselect("Model", sorted(runs["model"].dropna().unique()), key="runs_model")
    shown = common.filter_runs(runs, text, statuses, models)
    st.caption(f"{len(shown)} of {len(runs)} runs · select a row to open it")
    st.dataframe(
        shown[["run_id", "name", "experiment", "model", "created", "status"]],
        hide_index=True, width="stretch", on_select=row_opener(shown["run_id"].tolist()), selection_mode="single-row",
        key="runs_table",
    )
    if shown.empty:
        st.info("No run matches the filter.")
        st.stop()

    run_id = common.run_picker(shown, "runs_open", "Open run")
    st.divider()
    if run_id:
        with common.guard(f"Showing run {run_id}"):
            show_run(run_id)


with common.guard("This page"):
    main()
