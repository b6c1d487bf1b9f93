"""`compare_models` and `interp compare` on a hand-written run store of two tiny models with
different depths: relative depths, ranks, top-k, threshold shares, depth profiles, errors.

model-a: 5 layers x 3 heads (relative depths 0, .25, .5, .75, 1); model-b: 3 layers x 2 heads
(0, .5, 1). Both have retrieval.niah, knowledge.memory_context and the IOI head-patching score;
model-a alone has `induction`, model-b alone `vhd.shapes.first_token`; model-c shares nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp.cli import main
from interp.core.errors import InterpError
from interp.io.atlas import build_atlas
from interp.io.compare import (
    SCORE_THRESHOLDS,
    CompareError,
    compare_atlas,
    compare_models,
    score_threshold,
)
from interp.io.runstore import RunStore, build_manifest

IOI = "patching.ioi.denoising.logit_diff"
# values in (layer, head) order
RETRIEVAL_A = [0.0, 0.05, 0.2, 0.0, 0.3, 0.01, 0.5, 0.1, 0.0, 0.02, 0.0, 0.15, 0.0, 0.0, 0.1]
RETRIEVAL_B = [0.12, 0.0, 0.0, 0.4, 0.1, 0.05]
MEMORY_A = [0.1, -0.2, 0.0, 0.3, 0.0, -0.6, 0.0, 0.05, 0.0, 0.0, 0.4, 0.0, -0.1, 0.0, 0.2]
MEMORY_B = [0.0, -0.3, 0.2, 0.0, -0.5, 0.1]
IOI_A = list(np.linspace(-0.5, 0.9, 15))
IOI_B = [0.1, 0.0, -0.2, 0.7, 0.3, 0.0]


def _heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def _scores_run(store: RunStore, model: str, shape: tuple[int, int], scores: dict[str, list[float]]) -> str:
    run = store.create("scores")
    run.write_manifest(build_manifest({"name": "scores"}, model_id=model, weights_sha256=None, seed=0,
                                      extra={"experiment": "synthetic"}))
    heads = _heads(*shape)
    run.write_table("head_scores", pd.DataFrame({
        "layer": [lay for lay, _ in heads] * len(scores), "head": [h for _, h in heads] * len(scores),
        "score": [name for name in scores for _ in heads],
        "value": [v for values in scores.values() for v in values],
    }))
    run.mark("complete")
    return run.run_id


def _ioi_run(store: RunStore, model: str, shape: tuple[int, int], values: list[float]) -> str:
    """An IOI run as the runner writes it: the atlas names its score patching.ioi...."""
    run = store.create("ioi")
    run.write_manifest(build_manifest({"name": "ioi", "data": {"source": "ioi"}}, model_id=model,
                                      weights_sha256=None, seed=0, extra={"experiment": "ioi.yaml"}))
    heads = _heads(*shape)
    run.write_table("head_patching", pd.DataFrame({
        "layer": [lay for lay, _ in heads], "head": [h for _, h in heads], "normalised": values,
        "direction": "denoising", "metric": "logit_diff",
    }))
    run.mark("complete")
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("compare") / "runs")
    _scores_run(store, "model-a", (5, 3), {"retrieval.niah": RETRIEVAL_A, "knowledge.memory_context": MEMORY_A,
                                           "induction": list(np.arange(15.0))})
    _ioi_run(store, "model-a", (5, 3), IOI_A)
    _scores_run(store, "model-b", (3, 2), {"retrieval.niah": RETRIEVAL_B, "knowledge.memory_context": MEMORY_B,
                                           "vhd.shapes.first_token": [1.0] * 6})
    _ioi_run(store, "model-b", (3, 2), IOI_B)
    _scores_run(store, "model-c", (2, 2), {"vhd.other": [0.0, 1.0, 2.0, 3.0]})
    running = store.create("unfinished")  # not complete: the atlas skips it
    running.write_manifest(build_manifest({"name": "unfinished"}, model_id="model-d", weights_sha256=None, seed=0))
    return store


@pytest.fixture(scope="module")
def result(store):
    return compare_models(store.root, "model-a", "model-b", k=3)


def test_shared_scores_and_shapes(result):
    assert set(result.scores) == {"retrieval.niah", "knowledge.memory_context", IOI}
    assert result.only_a == ["induction"] and result.only_b == ["vhd.shapes.first_token"]
    assert result.n_layers == {"model-a": 5, "model-b": 3}
    assert result.n_heads_per_layer == {"model-a": 3, "model-b": 2}
    assert list(result.frame.columns) == ["score", "model", "layer", "head", "relative_depth", "value", "rank"]
    counts = result.frame.groupby(["score", "model"]).size()
    assert set(counts.xs("model-a", level="model")) == {15} and set(counts.xs("model-b", level="model")) == {6}


def test_relative_depth_is_layer_over_last_layer(result):
    for model, n in (("model-a", 5), ("model-b", 3)):
        df = result.heads("retrieval.niah", model)
        np.testing.assert_allclose(df["relative_depth"], df["layer"] / (n - 1))
        assert df["relative_depth"].min() == 0.0 and df["relative_depth"].max() == 1.0
    b = result.heads("retrieval.niah", "model-b").drop_duplicates("layer")
    assert b["relative_depth"].tolist() == [0.0, 0.5, 1.0]


def test_values_and_ranks(result):
    a = result.heads("retrieval.niah", "model-a")
    assert a["value"].tolist() == RETRIEVAL_A  # (layer, head) order
    assert sorted(a["rank"]) == list(range(1, 16))  # a permutation: ties broken by (layer, head)
    top = a.sort_values("rank")
    assert list(zip(top["layer"], top["head"], strict=True))[:3] == [(2, 0), (1, 1), (0, 2)]
    assert top["value"].abs().is_monotonic_decreasing
    # ranks by |value|: the memory/context score is signed (context heads negative)
    mem = result.heads("knowledge.memory_context", "model-b").set_index(["layer", "head"])
    assert mem.loc[(2, 0), "rank"] == 1 and mem.loc[(2, 0), "value"] == -0.5
    assert mem.loc[(0, 1), "rank"] == 2 and mem.loc[(0, 1), "value"] == -0.3


def test_top_k_matches_atlas_top_k(store, result):
    atlas = build_atlas(store)
    for score in result.scores:
        for model in result.models:
            expected = atlas.top_k(score, 3, model)
            got = result.top(score, model)
            assert list(zip(got["layer"], got["head"], strict=True)) == list(
                zip(expected["layer"], expected["head"], strict=True))


def test_summary_top_k_depth_and_retrieval_share(result):
    s = result.summary.set_index(["score", "model"])
    ra, rb = s.loc[("retrieval.niah", "model-a")], s.loc[("retrieval.niah", "model-b")]
    # values of exactly 0.1 are not retrieval heads (> 0.1)
    assert ra["threshold"] == 0.1 and ra["n_above"] == 4 and ra["share_above"] == pytest.approx(4 / 15)
    assert rb["n_above"] == 2 and rb["share_above"] == pytest.approx(2 / 6)
    assert ra["top_k"] == "L2H0@0.50, L1H1@0.25, L0H2@0.00"
    assert ra["top_k_mean_depth"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert rb["top_k"] == "L1H1@0.50, L0H0@0.00, L2H0@1.00"
    assert rb["top_k_mean_depth"] == pytest.approx(0.5)
    assert ra["n_heads"] == 15 and ra["k"] == 3 and ra["n_layers"] == 5
    # no threshold rule for the other scores
    mem = s.loc[("knowledge.memory_context", "model-a")]
    assert pd.isna(mem["threshold"]) and pd.isna(mem["n_above"]) and pd.isna(mem["share_above"])
    assert s.loc[(IOI, "model-a"), "run_id"].startswith("ioi-")
    assert s.loc[("retrieval.niah", "model-b"), "run_id"].startswith("scores-")


def test_depth_profile_bins_of_width_a_tenth(result):
    prof = result.depth_profile("retrieval.niah")
    a = prof[prof["model"] == "model-a"].set_index("bin")
    assert len(a) == 10 and a["depth_lo"].tolist() == pytest.approx([i / 10 for i in range(10)])
    # model-a layers 0..4 at depths 0, .25, .5, .75, 1 -> bins 0, 2, 5, 7, 9 (depth 1 in the last)
    per_layer = np.array(RETRIEVAL_A).reshape(5, 3)
    for layer, b in enumerate([0, 2, 5, 7, 9]):
        assert a.loc[b, "n_heads"] == 3
        assert a.loc[b, "mean"] == pytest.approx(per_layer[layer].mean())
        assert a.loc[b, "mean_abs"] == pytest.approx(np.abs(per_layer[layer]).mean())
    empty = a.loc[[1, 3, 4, 6, 8]]
    assert (empty["n_heads"] == 0).all() and empty["mean"].isna().all()
    b = prof[prof["model"] == "model-b"].set_index("bin")
    assert b.loc[[0, 5, 9], "n_heads"].tolist() == [2, 2, 2] and b["n_heads"].sum() == 6
    mem = result.depth_profile("knowledge.memory_context")
    mb = mem[mem["model"] == "model-b"].set_index("bin")
    assert mb.loc[9, "mean"] == pytest.approx((-0.5 + 0.1) / 2) and mb.loc[9, "mean_abs"] == pytest.approx(0.3)


def test_one_score_and_options(store):
    r = compare_models(store, "model-b", "model-a", score="retrieval.niah", k=2,
                       thresholds={"retrieval.": 0.3, "knowledge.": 0.0}, n_layers={"model-b": 5})
    assert r.scores == ["retrieval.niah"] and r.models == ["model-b", "model-a"]
    s = r.summary.set_index("model")
    assert s.loc["model-a", "n_above"] == 1 and s.loc["model-b", "n_above"] == 1  # > 0.3: 0.5 and 0.4
    assert r.n_layers["model-b"] == 5  # the runs cover layers 0-2 of a 5-layer model
    b = r.heads("retrieval.niah", "model-b")
    np.testing.assert_allclose(b["relative_depth"], b["layer"] / 4)
    assert r.top("retrieval.niah", "model-a")["rank"].tolist() == [1, 2]
    with pytest.raises(CompareError, match="n_layers for model-a is 2"):
        compare_models(store, "model-a", "model-b", n_layers={"model-a": 2})


def test_a_constant_score_is_noted(tmp_path):
    store = RunStore(tmp_path / "runs")
    _scores_run(store, "model-a", (2, 2), {"retrieval.niah": [0.0] * 4})  # e.g. no trial kept
    _scores_run(store, "model-b", (3, 1), {"retrieval.niah": [0.0, 0.3, 0.2]})
    r = compare_models(store, "model-a", "model-b", k=2)
    assert r.notes == ["model-a: every head has retrieval.niah = 0; its top-k is (layer, head) order, not a ranking"]
    s = r.summary.set_index("model")
    assert s.loc["model-a", "n_above"] == 0 and s.loc["model-b", "share_above"] == pytest.approx(2 / 3)
    assert s.loc["model-b", "top_k"] == "L1H0@0.50, L2H0@1.00"


def test_thresholds():
    from interp.analyses.retrieval import RETRIEVAL_THRESHOLD

    assert SCORE_THRESHOLDS["retrieval."] == RETRIEVAL_THRESHOLD
    assert score_threshold("retrieval.niah") == 0.1 and score_threshold("dla.ioi") is None
    assert score_threshold("retrieval.x", {"retrieval.": 0.1, "retrieval.x": 0.5}) == 0.5


def test_side_by_side_and_lines(result):
    table = result.side_by_side("retrieval.niah")
    assert list(table.columns) == ["model-a", "model-b"]
    assert table.loc["layers x heads"].tolist() == ["5 x 3", "3 x 2"]
    assert table.loc["share > 0.1"].tolist() == ["26.7% (4)", "33.3% (2)"]
    assert table.loc["top-3 mean relative depth"].tolist() == ["0.25", "0.50"]
    assert table.loc["top 1"].tolist() == ["L2H0 +0.5 @ 0.50", "L1H1 +0.4 @ 0.50"]
    assert "share > 0.1" not in result.side_by_side("knowledge.memory_context").index
    text = "\n".join(result.lines())
    assert text.startswith("model-a (5 layers x 3 heads) vs model-b (3 layers x 2 heads)")
    assert "only model-a: induction; only model-b: vhd.shapes.first_token" in text
    assert "[0.9, 1.0]" in text and "[0.0, 0.1)" in text


def test_errors_name_what_is_available(store):
    with pytest.raises(CompareError, match=r"no complete run of model 'gpt-5'.*models with scores: "
                                           r"model-a, model-b, model-c") as err:
        compare_models(store, "model-a", "gpt-5")
    assert isinstance(err.value, InterpError) and "\n" not in str(err.value)
    with pytest.raises(CompareError, match="no complete run of model 'model-d'"):  # its run is not complete
        compare_models(store, "model-d", "model-a")
    with pytest.raises(CompareError, match=r"model-a and model-c share no score; model-a has: .*induction.*; "
                                           r"model-c has: vhd.other"):
        compare_models(store, "model-a", "model-c")
    with pytest.raises(CompareError, match=r"score 'induction' is not present for both models; shared: "):
        compare_models(store, "model-a", "model-b", score="induction")
    with pytest.raises(CompareError, match="two different models"):
        compare_models(store, "model-a", "model-a")
    with pytest.raises(CompareError, match="no complete run of model 'model-a'.*models with scores: none"):
        compare_models(store.root.parent / "nowhere", "model-a", "model-b")
    with pytest.raises(CompareError, match="k must be >= 1"):
        compare_models(store, "model-a", "model-b", k=0)
    r = compare_models(store, "model-a", "model-b", k=3)
    with pytest.raises(CompareError, match="not compared"):
        r.heads("induction")


def test_compare_atlas_matches_compare_models(store, result):
    r = compare_atlas(build_atlas(store), "model-a", "model-b", k=3)
    pd.testing.assert_frame_equal(r.frame.sort_values(["score", "model", "layer", "head"]).reset_index(drop=True),
                                  result.frame.sort_values(["score", "model", "layer", "head"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(r.summary.sort_values(["score", "model"]).reset_index(drop=True),
                                  result.summary.sort_values(["score", "model"]).reset_index(drop=True))


def test_cli_compare(store, tmp_path, capsys):
    out = tmp_path / "cmp" / "compare.parquet"
    assert main(["compare", "--model-a", "model-a", "--model-b", "model-b", "--runs-dir", str(store.root),
                 "--k", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model-a (5 layers x 3 heads) vs model-b (3 layers x 2 heads)" in printed
    assert "retrieval.niah" in printed and "share > 0.1" in printed and "26.7% (4)" in printed
    assert "L2H0 +0.5 @ 0.50" in printed and "L1H1 +0.4 @ 0.50" in printed
    frame = pd.read_parquet(out)
    assert len(frame) == 3 * (15 + 6) and set(frame["model"]) == {"model-a", "model-b"}
    summary = pd.read_parquet(tmp_path / "cmp" / "compare_summary.parquet")
    assert len(summary) == 6 and "top_k_mean_depth" in summary.columns
    assert len(pd.read_parquet(tmp_path / "cmp" / "compare_profile.parquet")) == 3 * 2 * 10
    assert f"wrote {out}" in printed

    assert main(["compare", "--model-a", "model-a", "--model-b", "model-b", "--runs-dir", str(store.root),
                 "--score", "knowledge.memory_context"]) == 0
    printed = capsys.readouterr().out
    assert "knowledge.memory_context" in printed and "retrieval.niah\n" not in printed
    assert "top-10 mean relative depth" in printed  # --k defaults to 10 (fewer heads: all of them)
    assert "note: model-b: every head has vhd.shapes.first_token" not in printed  # not compared

    assert main(["compare", "--model-a", "model-a", "--model-b", "model-b", "--runs-dir", str(store.root),
                 "--score", "vhd.shapes.first_token"]) == 2
    assert "is not present for both models" in capsys.readouterr().err

    assert main(["compare", "--model-a", "model-a", "--model-b", "model-c", "--runs-dir", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model-a and model-c share no score") and err.count("\n") == 1
