"""`interp app`: the streamlit command line it runs and the run store it passes on."""

from __future__ import annotations

import sys

import interp.cli as cli
from interp.cli import RUNS_DIR_ENV, app_command, app_script, build_parser, main


def test_defaults():
    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.runs_dir) == ("127.0.0.1", 8501, "runs")


def test_command_is_headless_streamlit_on_home():
    cmd = app_command("0.0.0.0", 9000)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(app_script()) and app_script().name == "Home.py" and app_script().parent.name == "app"
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.port"] == "9000"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"


def test_app_passes_the_runs_dir(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_serve(cmd, env):
        seen.update(cmd=cmd, env=env)
        return 0

    monkeypatch.setattr(cli, "serve", fake_serve)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    assert main(["app", "--port", "8765", "--runs-dir", "store"]) == 0
    assert seen["env"][RUNS_DIR_ENV] == str((tmp_path / "store").resolve())
    assert "8765" in seen["cmd"]
    assert "http://127.0.0.1:8765" in capsys.readouterr().out
    assert main(["app", "--runs-dir", "missing"]) == 0
    assert "does not exist yet" in capsys.readouterr().err
