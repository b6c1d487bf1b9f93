"""Grids (issue 15 item 3): expansion order, every invalid cell reported, one run per cell
recorded in its manifest, a failing cell that does not stop the others, --resume skipping the
complete cells, and `interp runs`, the atlas and compare reading a grid's runs together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.cli import main
from interp.core.errors import ConfigError, InterpError
from interp.io.atlas import build_atlas
from interp.io.compare import compare_models
from interp.io.config import load_config
from interp.io.grid import expand_grid, grid_ids, grid_runs, load_grid, run_grid
from interp.io.runstore import RunStore, build_manifest
from tests.io.grid_fixtures import scores_run

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
BASE = {"name": "g", "model": {"name": "tiny-llama"}, "data": {"n_prompts": 4}}


def _yaml(tmp_path: Path, data: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# --- expansion ---------------------------------------------------------------------------------


def test_cells_are_the_product_in_yaml_key_order_the_last_key_fastest():
    grid = expand_grid({**BASE, "grid": {"model.name": ["tiny-llama", "tiny-gpt2"], "seed": [0, 1, 2]}})
    assert grid.keys == ("model.name", "seed")
    assert [(c.cfg.model.name, c.cfg.seed) for c in grid.cells] == [
        ("tiny-llama", 0), ("tiny-llama", 1), ("tiny-llama", 2), ("tiny-gpt2", 0), ("tiny-gpt2", 1), ("tiny-gpt2", 2)]
    assert [c.index for c in grid.cells] == list(range(6))
    assert grid.cells[4].values == {"model.name": "tiny-gpt2", "seed": 1}
    assert grid.cells[4].cfg.data.n_prompts == 4  # the rest of the YAML is every cell's


def test_the_grid_id_is_stable_and_follows_the_yaml_and_the_overrides():
    data = {**BASE, "grid": {"seed": [0, 1]}}
    assert expand_grid(data).id == expand_grid(json.loads(json.dumps(data))).id
    assert expand_grid(data).id.startswith("g-")
    assert expand_grid(data, overrides={"data.n_prompts": "6"}).id != expand_grid(data).id
    assert expand_grid({**data, "data": {"n_prompts": 5}}).id != expand_grid(data).id


def test_overrides_apply_to_every_cell_and_may_not_touch_a_grid_key():
    grid = expand_grid({**BASE, "grid": {"seed": [0, 1]}}, overrides={"data.n_prompts": "2"})
    assert [c.cfg.data.n_prompts for c in grid.cells] == [2, 2]
    with pytest.raises(ConfigError) as info:
        expand_grid({**BASE, "grid": {"seed": [0, 1]}}, overrides={"seed": "3"})
    assert info.value.path == "seed" and "set by the grid" in str(info.value)


def test_every_invalid_cell_is_reported_naming_the_cell_and_the_field():
    with pytest.raises(ConfigError) as info:
        expand_grid({**BASE, "grid": {"data.n_prompts": [4, 0, -1], "seed": [0, 1]}}, file="g.yaml")
    text = str(info.value)
    assert info.value.path == "grid" and text.startswith("g.yaml: grid: 4 of 6 cells are invalid:")
    for i, n in ((2, 0), (3, 0), (4, -1), (5, -1)):
        assert f"cell {i} (data.n_prompts={n} seed={i % 2}): data.n_prompts:" in text
    assert "cell 0 " not in text and "cell 1 " not in text
    with pytest.raises(ConfigError) as info:
        expand_grid({**BASE, "grid": {"data.n_promts": [1, 2]}})
    assert "cell 0 (data.n_promts=1): data.n_promts:" in str(info.value)


@pytest.mark.parametrize(("grid", "path", "words"), [
    ([1, 2], "grid", "mapping of config paths"),
    ({"seed": []}, "grid.seed", "non-empty list"),
    ({"seed": 3}, "grid.seed", "non-empty list"),
    ({"seed": [1, 1]}, "grid.seed", "twice"),
    ({"name": ["a", "b"]}, "grid.name", "cannot vary"),
    ({"seed": list(range(1001))}, "grid", "more than 1000"),
])
def test_a_malformed_grid_is_one_line_naming_it(grid, path, words):
    with pytest.raises(ConfigError) as info:
        expand_grid({**BASE, "grid": grid})
    assert info.value.path == path and words in str(info.value) and "\n" not in str(info.value)


def test_a_yaml_without_grid_is_a_grid_of_one_cell_and_load_config_refuses_a_grid(tmp_path):
    grid = load_grid(_yaml(tmp_path, BASE))
    assert len(grid.cells) == 1 and grid.cells[0].values == {}
    with pytest.raises(ConfigError) as info:
        load_config(_yaml(tmp_path, {**BASE, "grid": {"seed": [0, 1]}}))
    assert info.value.path == "grid"


def test_validate_checks_every_cell_with_the_tokenizer_only(tmp_path, capsys, monkeypatch):
    import interp.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("validate loaded weights"))
    assert main(["validate", str(EXPERIMENTS / "grid_ioi_tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ok (grid grid_ioi_tiny-" in out and "4 cells over model.name, seed" in out
    assert "cell 3 (model.name=tiny-gpt2 seed=1): data: 6 IOI prompt pairs" in out
    bad = _yaml(tmp_path, {**BASE, "grid": {"model.name": ["tiny-llama", "no-such-model"]}})
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 cells" in err and "cell 1 (model.name=no-such-model): model.name:" in err


def test_validate_runs_the_preflight_of_every_cell(tmp_path, capsys):
    huge = _yaml(tmp_path, {**BASE, "grid": {"data.n_prompts": [4, 100000000]}})
    assert main(["validate", str(huge)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 cells fail their checks" in err and "cell 1 (data.n_prompts=100000000): data.n_prompts:" in err


# --- running (a stand-in for run_experiment: no model) ---------------------------------------------


def _fake_run(store_root: Path, fail: set[int], seen: list):
    """A stand-in for `run_experiment`: one complete run per call, or a failed one for the
    seeds in `fail` (after its run directory exists, as a failing step leaves it)."""

    def run(cfg, *, config_path=None, **kw):
        seen.append(cfg.seed)
        r = RunStore(kw.get("runs_dir") or store_root).create(cfg.name)
        r.write_manifest(build_manifest(cfg.to_dict(), model_id=cfg.model.name, weights_sha256=None, seed=cfg.seed))
        if cfg.seed in fail:
            r.mark("failed", error="boom")
            raise InterpError(f"seed {cfg.seed} broke")
        r.mark("complete")
        return r

    return run


def test_a_failing_cell_does_not_stop_the_others_and_resume_reruns_only_it(tmp_path):
    grid = expand_grid({**BASE, "grid": {"seed": [0, 1, 2]}})
    seen: list[int] = []
    lines: list[str] = []
    out = run_grid(grid, runs_dir=tmp_path, log=lines.append, run=_fake_run(tmp_path, {1}, seen))
    assert seen == [0, 1, 2] and [c.status for c in out.cells] == ["complete", "failed", "complete"]
    assert "cell 2/3 (seed=1): FAILED" in "\n".join(out.lines()) and "seed 1 broke" in out.lines()[1]
    assert out.lines()[-1].endswith("2 of 3 cells complete; failed: cells 2")
    runs = grid_runs(RunStore(tmp_path), grid.id)
    assert sorted(runs["cell"]) == [0, 1, 2]  # the failed cell's run is recorded too
    assert set(runs.loc[runs["cell"] == 1, "status"]) == {"failed"}
    manifest = RunStore(tmp_path).open(out.cells[0].run_id).read_manifest()
    assert manifest["grid"] == {"id": grid.id, "cell": 0, "n_cells": 3, "values": {"seed": 0}, "file": None}

    seen.clear()
    failed_run = runs.loc[runs["cell"] == 1, "path"].item()
    resumed: list = []
    fake = _fake_run(tmp_path, set(), seen)

    def resuming(cfg, **kw):  # the failed cell's own run is resumed in place (its finished shards reused)
        resumed.append(kw.get("resume"))
        return fake(cfg, **kw)

    out = run_grid(grid, runs_dir=tmp_path, log=lines.append, run=resuming, resume=True)
    assert [str(r.path) if r is not None else None for r in resumed] == [str(failed_run)]
    assert any(f"resuming run {Path(failed_run).name}" in line for line in lines)
    assert seen == [1] and [c.status for c in out.cells] == ["skipped", "complete", "skipped"]
    assert not out.failed and "skipped, already complete" in out.lines()[0]
    seen.clear()
    run_grid(grid, runs_dir=tmp_path, log=lines.append, run=_fake_run(tmp_path, set(), seen))
    assert seen == [0, 1, 2]  # without --resume every cell runs again


def test_an_interrupt_stops_the_grid_after_recording_its_cell(tmp_path):
    grid = expand_grid({**BASE, "grid": {"seed": [0, 1]}})

    def run(cfg, **kw):
        r = RunStore(tmp_path).create(cfg.name)
        r.write_manifest(build_manifest(cfg.to_dict(), model_id="m", weights_sha256=None, seed=cfg.seed))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, runs_dir=tmp_path, log=lambda s: None, run=run)
    assert grid_runs(RunStore(tmp_path), grid.id)["cell"].tolist() == [0]


# --- reading a grid's runs together -----------------------------------------------------------------


def test_runs_atlas_and_compare_read_one_grid_together(tmp_path, capsys):
    store = RunStore(tmp_path)
    g = {"id": "study-0123456789", "n_cells": 2, "values": {}}
    scores_run(store, "model-a", [0.1, 0.9, 0.2, 0.3], g | {"cell": 0})
    scores_run(store, "model-b", [0.5, 0.0, 0.7, 0.1], g | {"cell": 1})
    scores_run(store, "model-c", [0.0, 0.0, 0.0, 1.0], None)  # not in the grid
    other = scores_run(store, "model-a", [9.0, 9.0, 9.0, 9.0], {"id": "other-1", "cell": 0})  # newest, another grid
    assert grid_ids(store) == ["other-1", "study-0123456789"]
    atlas = build_atlas(store, grid="study-0123456789")
    assert atlas.models == ["model-a", "model-b"]
    assert atlas.for_model("model-a").table["retrieval.niah"].tolist() == [0.1, 0.9, 0.2, 0.3]
    assert other in build_atlas(store).provenance["run_id"].tolist()  # all runs: the newest wins
    result = compare_models(store, "model-a", "model-b", grid="study-0123456789")
    assert result.scores == ["retrieval.niah"]
    with pytest.raises(InterpError) as info:
        build_atlas(store, grid="nope")
    assert "no run of grid 'nope'" in str(info.value) and "study-0123456789" in str(info.value)

    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "study-0123456789#0" in out and "study-0123456789#1" in out and " -\n" in out + "\n"
    assert main(["atlas", "--runs-dir", str(tmp_path), "--grid", "study-0123456789"]) == 0
    out = capsys.readouterr().out
    assert "model-a" in out and "model-c" not in out
    assert main(["compare", "--runs-dir", str(tmp_path), "--grid", "study-0123456789",
                 "--model-a", "model-a", "--model-b", "model-c"]) == 2
    assert "model-c" in capsys.readouterr().err


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_tiny_grid_end_to_end_with_resume(tmp_path, capsys):
    path = str(EXPERIMENTS / "grid_ioi_tiny.yaml")
    args = ["run", path, "--runs-dir", str(tmp_path), "--quiet", "--set", "data.n_prompts=2"]
    assert main(args) == 0
    summary = capsys.readouterr().out.rstrip().split("\n\n")[-1].splitlines()  # after the runs' own output
    assert len(summary) == 5 and all(": complete, run " in line for line in summary[:4])
    assert summary[-1].endswith("4 of 4 cells complete")
    store = RunStore(tmp_path)
    (gid,) = grid_ids(store)
    runs = grid_runs(store, gid)
    assert sorted(runs["cell"]) == [0, 1, 2, 3] and set(runs["status"]) == {"complete"}
    assert set(runs["model"]) == {"tiny-llama", "tiny-gpt2"}
    assert build_atlas(store, grid=gid).models == ["tiny-gpt2", "tiny-llama"]
    assert compare_models(store, "tiny-llama", "tiny-gpt2", grid=gid).scores
    assert main([*args, "--resume"]) == 0
    summary = capsys.readouterr().out.rstrip().split("\n\n")[-1].splitlines()
    assert sum("skipped, already complete" in line for line in summary) == 4 and len(grid_runs(store, gid)) == 4


def test_resume_with_a_run_dir_on_a_grid_is_one_line(capsys):
    assert main(["run", str(EXPERIMENTS / "grid_ioi_tiny.yaml"), "--resume", "runs/x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume runs/x: a grid resumes with a bare --resume") and err.count("\n") == 1
