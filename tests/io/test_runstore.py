"""Run store: directories, manifests (atomic, corrupt ones listed), tables, figures."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.io import runstore
from interp.io.config import parse_config
from interp.io.runstore import (
    Run,
    RunNotFoundError,
    RunStore,
    RunStoreError,
    build_manifest,
)


def _manifest(tmp_path: Path, name: str = "ioi", **extra) -> dict:
    cfg = parse_config({"name": name, "model": {"name": "tiny-gpt2"}})
    return build_manifest(
        cfg.to_dict(),
        model_id="tiny-gpt2",
        weights_sha256="ab" * 32,
        seed=0,
        extra=extra or None,
        cwd=tmp_path,
    )


def test_create_names_and_suffixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create("ioi")
    assert run.path.is_dir() and run.path.parent == tmp_path / "runs"
    assert re.fullmatch(r"ioi-\d{8}-\d{6}", run.run_id)
    frozen = runstore._now()
    monkeypatch.setattr(runstore, "_now", lambda: frozen)
    first, second, third = (store.create("x") for _ in range(3))
    assert second.run_id == f"{first.run_id}-2" and third.run_id == f"{first.run_id}-3"
    with pytest.raises(RunStoreError, match="invalid run name"):
        store.create("../evil")


def test_build_manifest_fields(tmp_path: Path) -> None:
    m = _manifest(tmp_path, experiment="experiments/ioi.yaml")
    assert m["format_version"] == 1 and m["status"] == "running" and m["seed"] == 0
    assert m["config"]["name"] == "ioi" and m["model_id"] == "tiny-gpt2"
    assert m["weights_sha256"] == "ab" * 32 and m["experiment"] == "experiments/ioi.yaml"
    assert set(m["versions"]) >= {
        "python",
        "torch",
        "transformers",
        "transformer-lens",
        "nnsight",
        "pandas",
        "plotly",
        "interp",
    }
    assert m["versions"]["pandas"] == pd.__version__
    assert m["git_commit"] is None and m["git_dirty"] is None  # tmp_path is not a repo
    assert m["created_at"].endswith("+00:00") and m["hostname"]
    json.dumps(m)
    with pytest.raises(RunStoreError, match="overwrite"):
        _manifest(tmp_path, seed=3)


def test_build_manifest_records_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runstore, "_git_state", lambda cwd: ("f" * 40, True))
    m = _manifest(tmp_path)
    assert m["git_commit"] == "f" * 40 and m["git_dirty"] is True


def test_manifest_write_update_mark(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create("ioi")
    run.write_manifest(_manifest(tmp_path))
    assert run.read_manifest()["status"] == "running"
    run.update_manifest(n_prompts=8)
    run.mark("failed", error=ValueError("boom"))
    m = run.read_manifest()
    assert m["n_prompts"] == 8 and m["status"] == "failed" and m["finished_at"]
    assert m["error"] == "ValueError: boom" and m["config"]["name"] == "ioi"
    run.mark("complete")
    assert run.read_manifest()["error"] is None
    with pytest.raises(RunStoreError, match="running, complete, failed"):
        run.mark("done")
    assert [p.name for p in run.path.iterdir()] == ["manifest.json"]  # no temp files left


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunStore(tmp_path).create("ioi")
    run.write_manifest({"status": "running"})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        run.write_manifest({"status": "complete", "big": "x" * 10_000})
    assert run.read_manifest() == {"status": "running"}  # old manifest intact
    assert [p.name for p in run.path.iterdir()] == ["manifest.json"]


def test_tables_figures_text(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create("ioi")
    df = pd.DataFrame({"layer": [0, 1], "head": [2, 3], "value": [0.5, -1.0]})
    path = run.write_table("head_patching", df)
    assert path == run.path / "tables" / "head_patching.parquet"
    pd.testing.assert_frame_equal(run.read_table("head_patching"), df)
    assert run.tables() == ["head_patching"]
    with pytest.raises(RunStoreError, match="tables: head_patching"):
        run.read_table("nope")
    with pytest.raises(RunStoreError, match="invalid table name"):
        run.write_table("a/b", df)
    fig_path = run.write_figure("heads", go.Figure(go.Heatmap(z=[[1, 2]])))
    html = fig_path.read_text()
    assert fig_path == run.path / "figures" / "heads.html" and run.figures() == ["heads"]
    assert not re.search(r"<script[^>]+src=[\"']https?:", html) and "Plotly" in html
    assert run.write_text("summary.txt", "hi").read_text() == "hi"


def test_list_and_open(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    assert store.list_runs().empty and list(store.list_runs().columns) == runstore.LIST_COLUMNS
    good = store.create("ioi")
    good.write_manifest(_manifest(tmp_path, experiment="experiments/ioi.yaml"))
    corrupt = store.create("broken")
    corrupt.manifest_path.write_text("{not json")
    store.create("no_manifest")  # skipped: no manifest at all
    (store.root / "stray.txt").write_text("x")

    runs = store.list_runs()
    assert list(runs.columns) == [
        "run_id",
        "name",
        "experiment",
        "model",
        "created",
        "status",
        "path",
    ]
    assert sorted(runs["run_id"]) == sorted([good.run_id, corrupt.run_id])
    row = runs.set_index("run_id").loc[good.run_id]
    assert (row["name"], row["model"], row["status"]) == ("ioi", "tiny-gpt2", "running")
    assert row["experiment"] == "experiments/ioi.yaml" and row["path"] == str(good.path)
    assert runs.set_index("run_id").loc[corrupt.run_id, "status"] == "unreadable"
    assert runs.iloc[-1]["run_id"] == corrupt.run_id  # no date: sorted last

    assert store.open(good.run_id).path == good.path
    assert store.open(good.path).path == good.path
    with pytest.raises(RunNotFoundError, match="no run 'nope'") as info:
        store.open("nope")
    assert good.run_id in str(info.value)
    with pytest.raises(RunStoreError, match="unreadable"):
        Run(corrupt.path).read_manifest()
