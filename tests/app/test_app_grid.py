"""The Atlas page offers "runs of grid X": the atlas and its comparison read one grid's runs
together (issue 15 item 3)."""

from __future__ import annotations

from apptest_helpers import assert_no_exception, make_app

from interp.io.runstore import RunStore
from tests.io.grid_fixtures import scores_run

GRID = "study-0123456789"


def test_the_atlas_page_reads_one_grid(app_env, tmp_path):
    store = RunStore(tmp_path / "runs")
    scores_run(store, "model-a", [0.1, 0.9, 0.2, 0.3], {"id": GRID, "cell": 0})
    scores_run(store, "model-b", [0.5, 0.0, 0.7, 0.1], {"id": GRID, "cell": 1})
    scores_run(store, "model-c", [0.0, 0.0, 0.0, 1.0], None)
    app_env(store.root)
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    runs = at.selectbox(key="atlas_grid")
    assert runs.options == ["all runs", f"runs of grid {GRID}"] and runs.value == "all runs"
    assert at.selectbox(key="atlas_model").options == ["model-a", "model-b", "model-c"]
    runs.set_value(GRID).run()
    assert_no_exception(at)
    assert at.selectbox(key="atlas_model").options == ["model-a", "model-b"]
    assert at.selectbox(key="cmp_other_model-a").options == ["model-b"]


def test_no_grid_picker_without_grids(app_env, tmp_path):
    store = RunStore(tmp_path / "runs")
    scores_run(store, "model-a", [0.1, 0.9, 0.2, 0.3], None)
    app_env(store.root)
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    assert not [s for s in at.selectbox if s.key == "atlas_grid"]
