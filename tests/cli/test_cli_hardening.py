"""Issue 14 from the command line: lean run directories, one-line errors (exit 2) for run
stores and --out paths the user cannot write, and a real `interp run` stopped by a signal."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from interp.cli import main
from interp.io.runstate import HEARTBEAT
from interp.io.runstore import PLOTLY_JS

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "name": "tiny_ioi",
    "model": {"name": "tiny-llama"},
    "data": {"source": "ioi", "n_prompts": 4, "templates": [0, 1], "position_n_prompts": 2},
    "analyses": {"residual_patching": {"components": ["resid_pre", "mlp_out"]}},
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.integration  # a whole experiment run, end to end
def test_a_tiny_run_is_lean(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", str(_write(tmp_path, SMALL)), "--runs-dir", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert size < 8_000_000, f"{size / 1e6:.1f} MB"
    figures = sorted((run_dir / "figures").glob("*.html"))
    assert len(figures) >= 4 and (run_dir / "figures" / PLOTLY_JS).is_file()
    for f in figures:
        html = f.read_text()
        assert f'src="{PLOTLY_JS}"' in html and len(html) < 200_000, f
    report = (run_dir / "report.html").read_text()
    # self-contained: plotly.js inline exactly once (its licence banner opens the bundle)
    assert report.count("plotly.js v") == 1 and "<script src=" not in report


def test_runs_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["run", str(_write(tmp_path, SMALL)), "--runs-dir", str(tmp_path / "afile"), "--quiet"])
    _one_line_error(capsys, code, "afile", "directory")


@pytest.mark.parametrize("code_", [errno.EROFS, errno.EACCES])
def test_read_only_runs_dir(tmp_path, capsys, monkeypatch, code_):
    runs = tmp_path / "runs"
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(runs)):
            raise OSError(code_, os.strerror(code_), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code = main(["run", str(_write(tmp_path, SMALL)), "--runs-dir", str(runs), "--quiet"])
    _one_line_error(capsys, code, str(runs), os.strerror(code_))


def test_disk_full_while_writing(tmp_path, capsys, monkeypatch):
    import interp.io.runstore as rs

    real = rs._atomic_write

    def full_for_tables(path, data):
        if path.suffix == ".parquet" and path.stem == "head_patching":
            raise rs._os_problem(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "write", path)
        return real(path, data)

    monkeypatch.setattr(rs, "_atomic_write", full_for_tables)
    runs = tmp_path / "runs"
    code = main(["run", str(_write(tmp_path, SMALL)), "--runs-dir", str(runs), "--quiet"])
    _one_line_error(capsys, code, "head_patching.parquet", "disk is full")
    (run_dir,) = runs.iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "No space left" in manifest["error"]


def test_disk_full_at_the_os_level(tmp_path, capsys, disk_full):
    """ENOSPC from the write itself (not our wrapper): still one line."""
    disk_full()
    code = main(["run", str(_write(tmp_path, SMALL)), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    _one_line_error(capsys, code, "No space left on device")


def _atlas_store(tmp_path: Path) -> Path:
    from interp.io.runstore import RunStore, build_manifest

    run = RunStore(tmp_path / "runs").create("a")
    run.write_manifest(build_manifest({"name": "a"}, model_id="m", weights_sha256=None, seed=0))
    run.write_table("head_scores", pd.DataFrame({"layer": [0, 0], "head": [0, 1], "score": "s", "value": [1.0, 2.0]}))
    run.mark("complete")
    return tmp_path / "runs"


def test_atlas_out_to_an_unwritable_path(tmp_path, capsys, monkeypatch):
    runs = _atlas_store(tmp_path)
    (tmp_path / "afile").write_text("x")
    code = main(["atlas", "--runs-dir", str(runs), "--out", str(tmp_path / "afile" / "atlas.parquet")])
    _one_line_error(capsys, code, "cannot write --out", "atlas.parquet")

    def denied(self, data):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "write_bytes", denied)
    code = main(["atlas", "--runs-dir", str(runs), "--out", str(tmp_path / "ok" / "atlas.parquet")])
    _one_line_error(capsys, code, "Permission denied")


def test_unrelated_os_errors_keep_their_traceback(monkeypatch):
    import interp.cli as cli

    def boom(args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(cli, "cmd_runs", boom)
    with pytest.raises(OSError, match="I/O error"):
        main(["runs"])


@pytest.mark.integration
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interp_run_stopped_by_a_signal(tmp_path, sig, code):
    cfg = {**SMALL, "data": {**SMALL["data"], "n_prompts": 64}}
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp.cli", "run", str(_write(tmp_path, cfg)), "--runs-dir", str(runs),
         "--quiet", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 120
    while not list(runs.glob(f"*/{HEARTBEAT}")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)  # supervised now (its heartbeat is written)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted" in err
    (run_dir,) = runs.iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
