"""The app in a real browser: `interp app` as a subprocess, headless Chromium via Playwright.

Opens the Head maps page on the tiny IOI run, selects a head in the picker, waits until that
head's attention pattern (the token-level heatmap) is drawn, clicks a cell of the head map and
checks the picker follows, and saves screenshots under artifacts/. Skips only when Chromium
or the playwright package is missing; the server is always terminated.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from apptest_helpers import ioi_run_id

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`interp app` exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {timeout} s")


@pytest.fixture
def app_server(app_store, tmp_path):
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp.cli", "app", "--host", "127.0.0.1", "--port", str(port),
         "--runs-dir", str(app_store)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        # `interp app` runs streamlit as its child: end the whole group we started
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _select(page, label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `label`."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Until Streamlit has finished the script run (its 'running' status widget is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )


@pytest.mark.integration
def test_head_map_select_head_shows_attention(app_server, app_store):
    from playwright.sync_api import expect, sync_playwright

    run_id = ioi_run_id(app_store)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"{app_server}/Head_maps?run={run_id}")
            expect(page.get_by_role("heading", name="Head maps")).to_be_visible(timeout=60_000)
            expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
            _wait_idle(page)

            head_box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Head", exact=True))
            head_input = head_box.locator("input")
            target = "L0H1" if head_input.input_value() != "L0H1" else "L0H2"
            _select(page, "Head", target)
            expect(page.get_by_text(f"From the last token, {target} attends most to")).to_be_visible(timeout=120_000)
            attention = page.locator(".js-plotly-plot").filter(has_text=f"{target} attention on tiny-llama")
            expect(attention).to_be_visible(timeout=60_000)
            # the token-level view: the tokens of the run's first prompt label the axes
            first_word = pd.read_parquet(app_store / run_id / "tables" / "dataset.parquet")["clean"][0].split()[0]
            expect(attention.get_by_text(f"0: '{first_word.strip(',.')}'").first).to_be_attached()
            _wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "head_maps_attention.png"), full_page=True)

            # a click on a cell of the map selects that head too (layer 2, head 3)
            head_map = page.locator(".js-plotly-plot").first
            box = head_map.locator(".nsewdrag").first.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] * (3.5 / 4), box["y"] + box["height"] * (2.5 / 4))
            expect(head_input).to_have_value("L2H3", timeout=60_000)
            expect(page.get_by_text("From the last token, L2H3 attends most to")).to_be_visible(timeout=120_000)
            _wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "head_maps_click.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "head_maps_attention.png").stat().st_size > 10_000
