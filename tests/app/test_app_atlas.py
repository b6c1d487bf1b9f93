"""The head atlas on real tiny runs: columns, provenance, correlations (against scipy), top-k
overlaps (against plain sets), skipped runs, and `interp atlas`."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from apptest_helpers import ioi_run_id
from scipy.stats import spearmanr

from interp.cli import main
from interp.core.errors import InterpError
from interp.io.atlas import (
    build_atlas,
    head_dla,
    head_score_difference,
    run_head_scores,
    run_problems,
    task_name,
)
from interp.io.runstore import RunStore, build_manifest

SCORES = ["patching.ioi.denoising.logit_diff", "dla.ioi", "patching.live.denoising.logit_diff", "dla.live"]


@pytest.fixture(scope="module")
def atlas(app_store):
    return build_atlas(RunStore(app_store))


def test_one_row_per_head_one_column_per_score(atlas, app_store):
    assert atlas.models == ["tiny-llama"]
    assert len(atlas.table) == 16 and set(SCORES) == set(atlas.scores())
    assert not atlas.notes
    run = RunStore(app_store).open(ioi_run_id(app_store))
    hp = run.read_table("head_patching").set_index(["layer", "head"])["normalised"]
    got = atlas.table.set_index(["layer", "head"])["patching.ioi.denoising.logit_diff"]
    pd.testing.assert_series_equal(got.sort_index(), hp.sort_index(), check_names=False)
    dla = run.read_table("dla")
    dla = dla[dla["kind"] == "head"].set_index(["layer", "head"])["contribution"].astype(float)
    np.testing.assert_allclose(atlas.table.set_index(["layer", "head"])["dla.ioi"].loc[dla.index], dla)


def test_provenance_names_the_run(atlas, app_store):
    prov = atlas.provenance.set_index("score")
    assert prov.loc["dla.ioi", "run_id"] == ioi_run_id(app_store)
    assert prov.loc["dla.live", "run_id"].startswith("live-")
    assert prov.loc["patching.live.denoising.logit_diff", "dataset"] == "live"
    assert set(prov["n_runs"]) == {1} and set(prov["seed"]) == {0}
    assert prov.loc["patching.ioi.denoising.logit_diff", "source_table"] == "head_patching"


def test_spearman_matches_scipy(atlas):
    corr = atlas.correlations()
    for a in SCORES:
        for b in SCORES:
            expected = spearmanr(atlas.table[a], atlas.table[b]).statistic
            assert corr.loc[a, b] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_top_k_overlap_matches_sets(atlas, k):
    def top(score):
        order = atlas.table[score].abs().sort_values(ascending=False, kind="stable").index[:k]
        return set(zip(atlas.table.loc[order, "layer"], atlas.table.loc[order, "head"], strict=True))

    overlap = atlas.top_k_overlap(k)
    for a in SCORES:
        assert overlap.loc[a, a] == 1.0
        for b in SCORES:
            assert overlap.loc[a, b] == pytest.approx(len(top(a) & top(b)) / k)


def test_head_scores_rank_and_select(atlas):
    row = atlas.top_k("dla.ioi", 1).iloc[0]
    prof = atlas.head_scores(int(row["layer"]), int(row["head"])).set_index("score")
    assert prof.loc["dla.ioi", "rank"] == 1 and prof.loc["dla.ioi", "percentile"] == 100.0
    assert prof.loc["dla.ioi", "value"] == pytest.approx(row["value"])
    view = atlas.select("tiny-llama", scores=["dla.ioi"], layers=(1, 2), sort_by="dla.ioi", top=3)
    assert list(view.columns) == ["layer", "head", "dla.ioi"] and len(view) == 3
    assert view["layer"].between(1, 2).all()
    assert view["dla.ioi"].abs().is_monotonic_decreasing
    with pytest.raises(InterpError, match="no model"):
        atlas.for_model("gpt-5")


def test_head_scores_table_and_newest_run_wins(app_store, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(app_store, root)
    store = RunStore(root)
    run = store.create("pattern_scores")
    manifest = build_manifest({"name": "pattern_scores"}, model_id="tiny-llama", weights_sha256=None, seed=1,
                              extra={"experiment": "scores.yaml"})
    run.write_manifest(manifest)
    heads = [(lay, h) for lay in range(4) for h in range(4)]
    run.write_table("head_scores", pd.DataFrame({
        "layer": [lay for lay, _ in heads] * 2, "head": [h for _, h in heads] * 2,
        "score": ["induction"] * 16 + ["dla.ioi"] * 16, "value": np.arange(32, dtype=float),
    }))
    run.mark("complete")
    atlas = build_atlas(store)
    assert "induction" in atlas.scores()
    prov = atlas.provenance.set_index("score")
    assert prov.loc["dla.ioi", "run_id"] == run.run_id and prov.loc["dla.ioi", "n_runs"] == 2
    assert atlas.table.set_index(["layer", "head"]).loc[(3, 3), "dla.ioi"] == 31.0


def test_broken_runs_are_skipped_with_notes(broken_store):
    atlas = build_atlas(RunStore(broken_store))
    notes = "\n".join(atlas.notes)
    assert "corrupt_manifest-20000101-000000 skipped" in notes
    assert "old_format-20000101-000000 skipped" in notes and "format_version 0" in notes
    assert "corrupt_table-20000101-000000: table 'head_patching' skipped" in notes
    assert atlas.models == ["no-such-model", "tiny-llama"]
    # the good runs are newer, so they still provide the tiny-llama columns
    assert set(SCORES) <= set(atlas.for_model("tiny-llama").scores())


def test_run_problems_and_task_names(broken_store):
    store = RunStore(broken_store)
    assert "format_version 0" in run_problems(store.open("old_format-20000101-000000"))[0]
    missing = run_problems(store.open("missing_table-20000101-000000"))
    assert len(missing) == 1 and "dla, dla_per_prompt" not in missing[0] and "dla" in missing[0]
    assert "unreadable" in run_problems(store.open("corrupt_manifest-20000101-000000"))[0]
    assert run_problems(store.open(ioi_run_id(broken_store))) == []
    assert task_name({"config": {"data": {"source": "jsonl"}}, "dataset": {"name": "my.pairs"}}) == "my_pairs"
    assert task_name({"task": "live"}) == "live"


def test_run_scores_head_dla_and_difference(app_store):
    run = RunStore(app_store).open(ioi_run_id(app_store))
    scores = run_head_scores(run)
    assert set(scores["score"]) == {"patching.ioi.denoising.logit_diff", "dla.ioi"}
    dla = head_dla(run, 2, 1)
    table = run.read_table("dla").set_index("label")
    assert dla.contribution == pytest.approx(float(table.loc["L2H1", "contribution"]))
    assert len(dla.per_prompt) == 4 and "clean" in dla.per_prompt.columns
    heads = table[table["kind"] == "head"]["contribution"].abs()
    assert dla.rank == int((heads > abs(dla.contribution)).sum()) + 1
    a = scores[scores["score"] == "dla.ioi"]
    b = scores[scores["score"] == "patching.ioi.denoising.logit_diff"]
    diff = head_score_difference(a, b).set_index(["layer", "head"])
    assert len(diff) == 16
    np.testing.assert_allclose(diff["value"], diff["value_a"] - diff["value_b"])


def test_cli_atlas(app_store, tmp_path, capsys):
    out = tmp_path / "atlas.parquet"
    assert main(["atlas", "--runs-dir", str(app_store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-llama: 16 heads, 4 scores" in printed and "dla.ioi" in printed
    assert set(SCORES) <= set(pd.read_parquet(out).columns)
    assert (tmp_path / "atlas_provenance.parquet").is_file()
    pairs = pd.read_parquet(tmp_path / "atlas_score_pairs.parquet")
    assert len(pairs) == 4 * 3 // 2 and "score pairs, by |Spearman|" in printed
    atlas = build_atlas(RunStore(app_store), model="tiny-llama")
    rho, top = atlas.correlations(), atlas.top_k_overlap(10)
    for p in pairs.itertuples():  # the pairs table restates the two matrices
        assert p.spearman == pytest.approx(rho.loc[p.a, p.b]) and p.top_k_overlap == top.loc[p.a, p.b]
    assert list(pairs["spearman"].abs()) == sorted(pairs["spearman"].abs(), reverse=True)
    assert main(["atlas", "--runs-dir", str(app_store), "--model", "smollm2-135m"]) == 0
    assert "the atlas is empty" in capsys.readouterr().out
