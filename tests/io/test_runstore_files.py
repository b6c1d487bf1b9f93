"""Run files (issue 14): one copy of plotly.js per run, the umask respected, and file-system
errors (a file as the run store, read-only or full disk) as one line, not a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.io.runstore import PLOTLY_JS, RunStore, RunStoreError, build_manifest

CHROMIUM = "/usr/bin/chromium"


def _fig() -> go.Figure:
    return go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]), layout={"title": "t"})


def test_figures_share_one_plotly(tmp_path):
    run = RunStore(tmp_path).create("f")
    a, b = run.write_figure("a", _fig()), run.write_figure("b", _fig())
    script = run.path / "figures" / PLOTLY_JS
    assert script.is_file() and 1_000_000 < script.stat().st_size < 2_500_000
    assert run.figures() == ["a", "b"]
    for page in (a, b):
        html = page.read_text()
        assert f'src="{PLOTLY_JS}"' in html and len(html) < 50_000
        assert "Plotly.newPlot" in html
    alone = run.standalone_figure("a").decode()
    assert f'src="{PLOTLY_JS}"' not in alone and "DecompressionStream" in alone


@pytest.mark.integration
def test_a_figure_renders_offline_in_a_browser(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    run = RunStore(tmp_path).create("f")
    shared = run.write_figure("a", _fig())
    alone = tmp_path / "alone.html"  # the app's download: the same page, plotly inlined
    alone.write_bytes(run.standalone_figure("a"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            for page_path in (shared, alone):
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(page_path.as_uri())
                page.wait_for_selector(".plotly-graph-div .main-svg .hm", timeout=30_000)
                assert not errors, errors
                assert page.evaluate("typeof window.Plotly.react") == "function"  # the real plotly
        finally:
            browser.close()


def test_umask_is_respected(tmp_path):
    old = os.umask(0o022)
    try:
        run = RunStore(tmp_path / "runs").create("u")
        paths = [
            run.write_manifest(build_manifest({"name": "u"}, model_id="m", weights_sha256=None, seed=0)),
            run.write_table("t", pd.DataFrame({"x": [1]})),
            run.write_text("summary.md", "hi"),
            run.write_figure("a", _fig()),
            run.path / "figures" / PLOTLY_JS,
        ]
        run.update_manifest(status="complete")
        for p in paths:
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        os.umask(0o077)
        assert stat.S_IMODE(run.write_text("private.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunStoreError, match="must name a directory"):
        RunStore(tmp_path / "afile").create("r")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_runs_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RunStoreError, match="no permission|Permission denied"):
            RunStore(ro).create("r")
    finally:
        ro.chmod(0o755)


def _fail_with(monkeypatch, code: int, after_opens: int = 0) -> None:
    """os.open in the run store fails with `code` (EROFS, EACCES, ENOSPC) after some opens."""
    import interp.io.runstore as rs

    real, calls = os.open, []

    def fake(path, flags, mode=0o777, *a, **k):
        calls.append(path)
        if len(calls) > after_opens:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, mode, *a, **k)

    monkeypatch.setattr(rs.os, "open", fake)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_store_is_one_error(tmp_path, monkeypatch, code):
    run = RunStore(tmp_path).create("r")
    _fail_with(monkeypatch, code)
    with pytest.raises(RunStoreError, match=os.strerror(code)) as info:
        run.write_table("t", pd.DataFrame({"x": [1]}))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not list(run.path.rglob("*.tmp"))


def test_disk_full_is_one_error(tmp_path, disk_full):
    run = RunStore(tmp_path).create("r")
    disk_full()
    with pytest.raises(RunStoreError, match="disk is full"):
        run.write_text("x.txt", "data")
    assert not list(run.path.glob(".*.tmp"))
    shutil.rmtree(run.path)
