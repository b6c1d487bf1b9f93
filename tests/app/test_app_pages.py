"""Every page of the app under Streamlit's AppTest, on a run store made by real tiny runs."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from apptest_helpers import assert_no_exception, ioi_run_id, make_app, messages

from interp.io.runstore import RunStore


@pytest.fixture(autouse=True)
def _store(app_env, app_store):
    app_env(app_store)


def charts(at) -> int:
    return len(at.get("plotly_chart"))


def metric(at, label: str) -> str:
    (m,) = [m for m in at.metric if m.label == label]
    return m.value


def test_home(app_store):
    at = make_app()
    assert_no_exception(at)
    assert metric(at, "Runs") == "4" and metric(at, "Complete") == "4"
    assert str(app_store) in " ".join(c.value for c in at.caption)
    assert not at.error


def test_runs_list_filter_and_run_page(app_store):
    at = make_app("pages/1_Runs.py")
    assert_no_exception(at)
    listed = at.dataframe[0].value
    assert len(listed) == 4 and {"run_id", "experiment", "model", "created", "status"} <= set(listed.columns)
    # the newest run (the IOI run) is open: metrics, summary figures, no warnings
    run_id = ioi_run_id(app_store)
    assert at.selectbox(key="runs_open").value == run_id
    assert metric(at, "Status") == "complete" and metric(at, "Model") == "tiny-llama"
    assert metric(at, "Prompts") == "4"
    assert charts(at) >= 4  # head patching, DLA bar, DLA per head, residual patching
    assert not at.warning and not at.error

    at.text_input(key="runs_filter").input("live").run()
    assert len(at.dataframe[0].value) == 1
    assert at.selectbox(key="runs_open").value.startswith("live-")
    assert any("kind: live" in c.value for c in at.code)  # the Config tab
    at.text_input(key="runs_filter").input("").run()
    at.multiselect(key="runs_model").select("tiny-llama").run()
    assert len(at.dataframe[0].value) == 4
    at.text_input(key="runs_filter").input("no such run").run()
    assert any("No run matches" in m for m in messages(at, "info"))
    assert_no_exception(at)


def test_runs_tables_tab(app_store):
    at = make_app("pages/1_Runs.py")
    run_id = ioi_run_id(app_store)
    at.selectbox(key=f"runs_table_pick_{run_id}").select("head_patching").run()
    assert_no_exception(at)
    frames = [d.value for d in at.dataframe]
    assert any(len(f) == 16 and "normalised" in f.columns for f in frames)


def test_head_maps_select_head_shows_details(app_store):
    run_id = ioi_run_id(app_store)
    at = make_app("pages/2_Head_maps.py")
    assert_no_exception(at)
    assert at.selectbox(key="hm_run").value == run_id
    result = at.selectbox(key=f"hm_score_{run_id}")
    assert result.options == ["patching.ioi.denoising.logit_diff", "dla.ioi"]
    # preset: the head with the largest |normalised| patching effect
    hp = pd.read_parquet(app_store / run_id / "tables" / "head_patching.parquet")
    best = hp.loc[hp["normalised"].abs().idxmax()]
    picker = at.selectbox(key=f"hm_head_{run_id}")
    assert picker.value == f"L{best['layer']}H{best['head']}"
    assert len(picker.options) == 16

    picker.select("L0H1").run()
    assert_no_exception(at)
    assert not at.error
    assert any("From the last token, L0H1 attends most to" in c.value for c in at.caption)
    assert charts(at) == 2  # the head map and the attention pattern
    profile = [d.value for d in at.dataframe if "score" in d.value.columns][0]
    assert set(profile["score"]) == {"patching.ioi.denoising.logit_diff", "dla.ioi",
                                     "patching.live.denoising.logit_diff", "dla.live"}
    assert metric(at, "Rank by |DLA|").endswith("of 16")

    at.radio(key="hm_which").set_value("corrupt").run()
    at.selectbox(key=f"hm_prompt_{run_id}").select(2).run()
    assert_no_exception(at)
    assert charts(at) == 2


def test_head_maps_compare_side_by_side_and_difference(app_store):
    run_id = ioi_run_id(app_store)
    at = make_app("pages/2_Head_maps.py")
    at.toggle(key="hm_compare").set_value(True).run()
    assert_no_exception(at)
    assert at.selectbox(key=f"hm_score_b_{run_id}").value == "dla.ioi"
    assert charts(at) == 3  # A, B, attention
    at.radio(key="hm_mode").set_value("Difference A - B").run()
    assert_no_exception(at)
    assert charts(at) == 2
    live = [r for r in at.selectbox(key="hm_run_b").options if r.startswith("live-")][0]
    at.selectbox(key="hm_run_b").select(live).run()
    assert_no_exception(at)
    assert at.selectbox(key=f"hm_score_b_{live}").value == "patching.live.denoising.logit_diff"


def test_circuits_graph_threshold_and_comparison(app_store):
    ids = {p.name.split("-")[0]: p.name for p in app_store.iterdir() if p.name.startswith("circuit_fixture")}
    at = make_app("pages/3_Circuits.py")
    assert_no_exception(at)
    assert len(at.selectbox(key="circ_a").options) == 2
    at.selectbox(key="circ_a").select(ids["circuit_fixture_a"]).run()
    assert charts(at) == 1
    edges = [d.value for d in at.dataframe if "strength" in d.value.columns][0]
    assert len(edges) == 4

    at.slider(key="circ_threshold").set_value(0.3).run()
    edges = [d.value for d in at.dataframe if "strength" in d.value.columns][0]
    assert sorted(edges["strength"]) == [0.5, 0.9]

    at.slider(key="circ_threshold").set_value(0.0).run()
    at.selectbox(key="circ_b").select(ids["circuit_fixture_b"]).run()
    assert_no_exception(at)
    assert metric(at, "Shared heads") == "2"
    assert metric(at, "Head Jaccard") == "0.40" and metric(at, "Edge Jaccard") == "0.40"
    assert charts(at) == 2


def test_circuits_without_any_circuit(app_env, tmp_path):
    root = tmp_path / "runs"
    RunStore(root).create("empty")  # a directory without a manifest is not a run
    app_env(root)
    at = make_app("pages/3_Circuits.py")
    assert_no_exception(at)
    assert any("holds a circuit" in m and "circuit_nodes" in m for m in messages(at, "info"))


def test_atlas_page():
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    assert at.selectbox(key="atlas_model").value == "tiny-llama"
    table = at.dataframe[0].value
    assert len(table) == 16 and "dla.live" in table.columns
    # sorted by the first score's |value| by default
    first = table.columns[2]
    assert table[first].abs().is_monotonic_decreasing
    assert charts(at) == 2  # correlations, top-k overlap
    at.multiselect(key="atlas_scores_tiny-llama").unselect("dla.ioi").unselect("dla.live").run()
    at.slider(key="atlas_layers_tiny-llama").set_value((2, 3)).run()
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert len(table) == 8 and "dla.ioi" not in table.columns
    provenance = at.dataframe[1].value
    assert set(provenance["score"]) >= {"dla.ioi", "patching.live.denoising.logit_diff"}


def test_live_page_runs_and_saves(app_env, app_store, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(app_store, root)  # saving adds a run: keep the shared store unchanged
    app_env(root)
    at = make_app("pages/5_Live_analysis.py")
    assert_no_exception(at)
    at.text_input(key="live_model").input("tiny-llama")
    at.button(key="live_load").click().run()
    assert_no_exception(at)
    assert any("tiny-llama" in s and "4 layers x 4 heads" in s for s in messages(at, "success"))

    at.button(key="live_run").click().run()
    assert_no_exception(at)
    assert not at.error
    assert metric(at, "Clean logit_diff") and charts(at) == 3  # map, DLA, attention
    assert at.selectbox(key="live_head").value in at.selectbox(key="live_head").options
    at.selectbox(key="live_head").select("L2H3").run()
    at.radio(key="live_which").set_value("corrupt").run()
    assert_no_exception(at)

    at.text_input(key="live_run_name").input("my_pair")
    at.button(key="live_save").click().run()
    assert_no_exception(at)
    saved = [s for s in messages(at, "success") if "Saved as run" in s]
    assert saved and "my_pair-" in saved[0]
    runs = RunStore(root).list_runs()
    assert len(runs) == 5 and runs.loc[0, "name"] == "my_pair" and runs.loc[0, "status"] == "complete"
