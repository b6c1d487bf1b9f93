"""The atlas and run list with bad runs (issue 14): an all-NaN score column, wrong-typed
manifest fields, a missing table (the CLI warns like the app)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from interp.cli import main
from interp.io.atlas import build_atlas
from interp.io.runstore import RunStore, build_manifest, manifest_problems


def _run(store: RunStore, name: str, values, created: str, *, done=None, **fields):
    run = store.create(name)
    extra = {"analyses_done": done} if done is not None else {}
    manifest = build_manifest({"name": name, "data": {"source": "ioi"}}, model_id="m", weights_sha256=None,
                              seed=0, extra=extra)
    run.write_manifest(manifest | {"created_at": created} | fields)
    dla = pd.DataFrame({"kind": "head", "layer": [0, 0, 1], "head": [0, 1, 0], "contribution": values})
    run.write_table("dla", dla)
    run.mark("complete")
    return run


def test_all_nan_newest_score_falls_back(tmp_path, capsys):
    store = RunStore(tmp_path)
    old = _run(store, "old", [1.0, -2.0, 3.0], "2020-01-01T00:00:00")
    new = _run(store, "new", [np.nan] * 3, "2021-01-01T00:00:00")
    atlas = build_atlas(store)
    assert atlas.table["dla.ioi"].tolist() == [1.0, -2.0, 3.0]
    assert atlas.provenance["run_id"].tolist() == [old.run_id]
    assert any(new.run_id in n and "no values" in n for n in atlas.notes)
    assert main(["atlas", "--runs-dir", str(tmp_path)]) == 0
    assert "dla.ioi" in capsys.readouterr().out


def test_only_nan_scores_is_an_empty_atlas(tmp_path, capsys):
    _run(RunStore(tmp_path), "new", [np.nan] * 3, "2021-01-01T00:00:00")
    assert main(["atlas", "--runs-dir", str(tmp_path)]) == 0
    assert "the atlas is empty" in capsys.readouterr().out


def test_wrong_typed_manifest_fields_flag_that_run(tmp_path, capsys):
    store = RunStore(tmp_path)
    good = _run(store, "good", [1.0, 2.0, 3.0], "2020-01-01T00:00:00")
    bad = _run(store, "bad", [1.0, 2.0, 3.0], "2021-01-01T00:00:00")
    manifest = json.loads(bad.manifest_path.read_text())
    bad.manifest_path.write_text(json.dumps(manifest | {"model_id": ["a", "b"], "status": 3}))
    runs = store.list_runs().set_index("run_id")
    assert runs.loc[bad.run_id, "status"] == "invalid"
    assert pd.isna(runs.loc[bad.run_id, "model"]) and runs.loc[good.run_id, "status"] == "complete"
    assert manifest_problems(bad.read_manifest()) == ["model_id has type list, expected str",
                                                      "status has type int, expected str"]
    sorted(runs["status"].dropna().unique())  # what the Runs page does: no TypeError
    assert runs["model"].dropna().nunique() == 1  # what Home does: no unhashable list
    atlas = build_atlas(store)
    assert atlas.provenance["run_id"].tolist() == [good.run_id]
    assert any(bad.run_id in n and "model_id has type list" in n for n in atlas.notes)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "invalid" in capsys.readouterr().out


def test_cli_atlas_warns_about_a_missing_table(tmp_path, capsys):
    store = RunStore(tmp_path)
    run = _run(store, "r", [1.0, 2.0, 3.0], "2020-01-01T00:00:00", done=["head_patching"])
    assert main(["atlas", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"run {run.run_id} is missing table(s) head_patching" in out


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atlas_and_runs_show_a_killed_run_as_interrupted(tmp_path, capsys):
    store = RunStore(tmp_path)
    run = _run(store, "killed", [1.0, 2.0, 3.0], "2021-01-01T00:00:00")
    run.update_manifest(status="running", finished_at=None, pid=_dead_pid())
    atlas = build_atlas(store)
    assert any(run.run_id in n and "status 'interrupted'" in n for n in atlas.notes)
    assert store.list_runs()["status"].tolist() == ["interrupted"]
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "interrupted" in capsys.readouterr().out
