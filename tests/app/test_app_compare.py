"""The Atlas page's "Compare with another model" section, and its figures, on a hand-written
run store of two tiny models of different depths (model-a: 5 layers x 3 heads, model-b: 3 x 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from apptest_helpers import assert_no_exception, make_app, messages

from interp.io.compare import compare_models
from interp.io.runstore import RunStore, build_manifest
from interp.viz.compare import compare_head_maps, depth_profile_chart

RETRIEVAL_A = [0.0, 0.05, 0.2, 0.0, 0.3, 0.01, 0.5, 0.1, 0.0, 0.02, 0.0, 0.15, 0.0, 0.0, 0.1]
RETRIEVAL_B = [0.12, 0.0, 0.0, 0.4, 0.1, 0.05]


def _scores_run(store: RunStore, model: str, shape: tuple[int, int], scores: dict[str, list[float]]) -> None:
    run = store.create("scores")
    run.write_manifest(build_manifest({"name": "scores"}, model_id=model, weights_sha256=None, seed=0,
                                      extra={"experiment": "synthetic"}))
    heads = [(layer, head) for layer in range(shape[0]) for head in range(shape[1])]
    run.write_table("head_scores", pd.DataFrame({
        "layer": [lay for lay, _ in heads] * len(scores), "head": [h for _, h in heads] * len(scores),
        "score": [name for name in scores for _ in heads],
        "value": [v for values in scores.values() for v in values],
    }))
    run.mark("complete")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("compare_app") / "runs")
    _scores_run(store, "model-a", (5, 3), {"retrieval.niah": RETRIEVAL_A,
                                           "knowledge.memory_context": list(np.linspace(-1, 1, 15)),
                                           "induction": list(np.arange(15.0))})
    _scores_run(store, "model-b", (3, 2), {"retrieval.niah": RETRIEVAL_B,
                                           "knowledge.memory_context": [0.0, -0.3, 0.2, 0.0, -0.5, 0.1]})
    _scores_run(store, "model-c", (2, 2), {"vhd.other": [0.0, 1.0, 2.0, 3.0]})
    return store


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_compare_section(app_env, two_models):
    app_env(two_models.root)
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    assert not at.error
    assert at.selectbox(key="atlas_model").value == "model-a"
    other = at.selectbox(key="cmp_other_model-a")
    assert other.options == ["model-b", "model-c"] and other.value == "model-b"
    score = at.selectbox(key="cmp_score_model-a_model-b")
    assert score.options == ["retrieval.niah", "knowledge.memory_context"]
    # correlations + top-k overlap, then the head maps and the depth profile
    figs = charts(at)
    assert len(figs) == 4
    maps = [t for t in figs[2]["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in maps] == ["model-a", "model-b"]
    assert maps[0]["y"] == [0.0, 0.25, 0.5, 0.75, 1.0] and maps[1]["y"] == [0.0, 0.5, 1.0]
    assert figs[2]["layout"]["yaxis"]["range"] == [1.25, -0.25]  # half of model-b's layer spacing
    table = at.dataframe[2].value  # after the atlas view and the provenance
    assert list(table.columns) == ["model-a", "model-b"]
    assert table.loc["share > 0.1"].tolist() == ["26.7% (4)", "33.3% (2)"]
    assert table.loc["top 1"].tolist() == ["L2H0 +0.5 @ 0.50", "L1H1 +0.4 @ 0.50"]
    summary = at.dataframe[3].value
    assert len(summary) == 4 and set(summary["model"]) == {"model-a", "model-b"}

    assert charts(at)[3]["layout"]["yaxis"]["title"]["text"] == "mean"
    score.select("knowledge.memory_context").run()
    at.radio(key="cmp_profile_stat").set_value("mean_abs").run()
    assert charts(at)[3]["layout"]["yaxis"]["title"]["text"] == "mean_abs"
    at.number_input(key="cmp_k_model-a_model-b").set_value(2).run()
    assert_no_exception(at)
    table = at.dataframe[2].value
    assert "share > 0.1" not in table.index and "top-2 mean relative depth" in table.index
    assert "top 3" not in table.index

    at.selectbox(key="cmp_other_model-a").select("model-c").run()
    assert_no_exception(at)
    assert any("model-a and model-c share no score" in m and "vhd.other" in m for m in messages(at, "info"))
    assert not at.error


def test_second_model_missing(app_env, tmp_path):
    store = RunStore(tmp_path / "runs")
    _scores_run(store, "model-a", (2, 2), {"retrieval.niah": [0.0, 0.2, 0.3, 0.0]})
    app_env(store.root)
    at = make_app("pages/4_Atlas.py")
    assert_no_exception(at)
    assert any("Only model-a has per-head scores" in m for m in messages(at, "info"))
    assert not at.error


def test_figures(two_models):
    result = compare_models(two_models.root, "model-a", "model-b", score="retrieval.niah", k=3)
    fig = compare_head_maps(result.heads("retrieval.niah"), top_k=3)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert np.asarray(heat[0].z).shape == (5, 3) and np.asarray(heat[1].z).shape == (3, 2)
    np.testing.assert_allclose(np.asarray(heat[0].z).ravel(), RETRIEVAL_A)
    assert fig.layout.coloraxis.cmax == 0.5 and fig.layout.coloraxis.cmin == -0.5  # shared, symmetric
    outlines = [t for t in fig.data if t.type == "scatter"]
    assert [len(t.x) for t in outlines] == [3, 3]
    assert sorted(zip(outlines[1].x, outlines[1].y, strict=True)) == [(0, 0.0), (0, 1.0), (1, 0.5)]
    prof = depth_profile_chart(result.depth_profile("retrieval.niah"))
    assert [t.name for t in prof.data] == ["model-a", "model-b"]
    assert len(prof.data[0].x) == 10 and prof.data[0].x[0] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="several rows per"):
        compare_head_maps(pd.concat([result.heads("retrieval.niah")] * 2))
