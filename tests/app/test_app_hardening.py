"""The app hardened (issue 14): a token asked for before any page renders, a warning when
served beyond loopback, a wrong-typed manifest flagged as one run, and `interp app` stopping
its Streamlit server when it is sent SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from apptest_helpers import assert_no_exception, ioi_run_id, make_app, messages

import interp.cli as cli
from interp.cli import TOKEN_ENV, main

REPO = Path(__file__).resolve().parents[2]
PAGES = ["pages/1_Runs.py", "pages/2_Head_maps.py", "pages/3_Circuits.py", "pages/4_Atlas.py",
         "pages/5_Live_analysis.py"]


# --- the token --------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, *PAGES])
def test_token_is_asked_before_any_page(app_env, app_store, monkeypatch, page):
    app_env(app_store)
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    at = make_app(page)
    assert_no_exception(at)
    assert [t.label for t in at.text_input] == ["Access token"]
    assert not at.dataframe and not at.metric and not at.selectbox and not at.get("plotly_chart")


def test_token_wrong_then_right(app_env, app_store, monkeypatch):
    app_env(app_store)
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    at = make_app()
    at.text_input(key="_interp_token").input("nope").run()
    assert "Wrong token." in messages(at, "error") and not at.metric
    at.text_input(key="_interp_token").input("s3cret").run()
    assert_no_exception(at)
    assert at.metric and not at.text_input  # Home renders
    at.switch_page("pages/1_Runs.py").run()  # the session stays admitted
    assert_no_exception(at)
    assert at.dataframe


def test_no_token_no_gate(app_env, app_store, monkeypatch):
    app_env(app_store)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    at = make_app()
    assert at.metric and "Access token" not in [t.label for t in at.text_input]


# --- --host and --token on the command line -------------------------------------------------------
def _fake_serve(monkeypatch) -> dict:
    seen: dict = {}

    def fake(cmd, env):
        seen.update(cmd=cmd, env=env)
        return 0

    monkeypatch.setattr(cli, "serve", fake)
    return seen


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_host_no_warning(monkeypatch, tmp_path, capsys, host):
    _fake_serve(monkeypatch)
    assert main(["app", "--host", host, "--runs-dir", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_open_host_warns_and_token_is_passed(monkeypatch, tmp_path, capsys):
    seen = _fake_serve(monkeypatch)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["app", "--host", "0.0.0.0", "--runs-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: --host 0.0.0.0" in err and "loads any local model directory or hub id" in err
    assert "writes runs into" in err and "--token" in err
    assert TOKEN_ENV not in seen["env"]
    assert main(["app", "--host", "0.0.0.0", "--token", "abc", "--runs-dir", str(tmp_path)]) == 0
    assert "asks for the token" in capsys.readouterr().err and seen["env"][TOKEN_ENV] == "abc"
    monkeypatch.setenv(TOKEN_ENV, "fromenv")
    assert main(["app", "--host", "0.0.0.0", "--runs-dir", str(tmp_path)]) == 0
    assert seen["env"][TOKEN_ENV] == "fromenv"


# --- a wrong-typed manifest -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def typed_store(tmp_path_factory, app_store) -> Path:
    root = tmp_path_factory.mktemp("typed") / "runs"
    shutil.copytree(app_store, root)
    bad = root / "bad_types-20000101-000000"
    shutil.copytree(root / ioi_run_id(root), bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest.update(model_id=["a", "b"], status=3, created_at="2000-01-01T00:00:00+00:00")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("page", [None, *PAGES])
def test_wrong_typed_manifest_does_not_break_pages(app_env, typed_store, page):
    app_env(typed_store)
    at = make_app(page)
    assert_no_exception(at)
    assert not at.error


def test_wrong_typed_manifest_is_flagged(app_env, typed_store):
    app_env(typed_store)
    at = make_app()
    (m,) = [m for m in at.metric if m.label == "Failed / unreadable"]
    assert m.value == "1"
    at = make_app("pages/1_Runs.py")
    listed = at.dataframe[0].value
    assert listed.set_index("run_id").loc["bad_types-20000101-000000", "status"] == "invalid"
    at.selectbox(key="runs_open").select("bad_types-20000101-000000").run()
    assert_no_exception(at)
    assert any("malformed manifest" in w and "model_id has type list" in w for w in messages(at, "warning"))


def test_killed_run_shows_as_interrupted(app_env, typed_store, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(typed_store, root)
    killed = root / "killed-20000101-000000"
    shutil.copytree(root / ioi_run_id(root), killed)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    manifest = json.loads((killed / "manifest.json").read_text())
    manifest.update(status="running", pid=dead.pid, hostname=socket.gethostname(), finished_at=None)
    (killed / "manifest.json").write_text(json.dumps(manifest))
    app_env(root)
    at = make_app("pages/1_Runs.py")
    listed = at.dataframe[0].value.set_index("run_id")
    assert listed.loc["killed-20000101-000000", "status"] == "interrupted"
    at.selectbox(key="runs_open").select("killed-20000101-000000").run()
    assert_no_exception(at)
    assert any("was interrupted" in w for w in messages(at, "warning"))
    assert "interrupted" in [m.value for m in at.metric if m.label == "Status"]


# --- SIGTERM stops the server -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """No server listens on `port`. SO_REUSEADDR: closed connections in TIME_WAIT (the server
    side of the health checks, for 60 s) do not count; on Linux a listening socket still does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.integration
def test_sigterm_stops_the_streamlit_child(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp.cli", "app", "--port", str(port), "--runs-dir", str(tmp_path)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start")
        assert not _port_free(port)
        proc.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` or a supervisor does
        assert proc.wait(timeout=30) == 143
        deadline = time.monotonic() + 15
        while not _port_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _port_free(port), "the Streamlit server outlived `interp app`"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group we started
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
