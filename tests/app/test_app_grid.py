"""The Atlas page offers "runs of grid X": the atlas and its comparison read one grid's runs
together (issue 15 item 3)."""

from __future__ import annotations

import pandas as pd
from apptest_helpers import assert_no_exception, make_app

from interp.io.runstore import RunStore, build_manifest

GRID = "study-0123456789"


def _run(store: RunStore, model: str, values: list[float], grid: dict | None) -> None:
    run = store.create("scores")
    run.write_manifest(build_manifest({"name": "scores"}, model_id=model, weights_sha256=None, seed=0,
                                      extra={"experiment": "synthetic"}))
    heads = [(lay, h) for lay in range(2) for h in range(2)]
    run.write_table("head_scores", pd.DataFrame({"layer": [lay for lay, _ in heads], "head": [h for _, h in heads],
                                                 "score": "retrieval.niah", "value": values}))
    run.mark("complete")
    if grid is not None:
        run.update_manifest(grid=grid)


def test_the_atlas_page_reads_one_grid(app_env, tmp_path):
    store = RunStore(tmp_path / "runs")
    _run(store, "model-a", [0.1, 0.9, 0.2, 0.3], {"id": GRID, "cell": 0})
    _run(store, "model-b", [0.5, 0.0, 0.7, 0.1], {"id": GRID, "cell": 1})
    _run(store, "model-c", [0.0, 0.0, 0.0, 1.0], None)
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
    _run(store, "model-a", [0.1, 0.9, 0.2, 0.3], None)
    app_env(store.root)
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    assert not [s for s in at.selectbox if s.key == "atlas_grid"]
