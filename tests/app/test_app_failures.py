"""Failure behaviour: broken runs, unloadable models and bad prompts give a message in the
page (st.error / st.warning), never an exception, and the rest of the page keeps working."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apptest_helpers import APP_DIR, assert_no_exception, ioi_run_id, make_app, messages

PAGES = ["pages/1_Runs.py", "pages/2_Head_maps.py", "pages/3_Circuits.py", "pages/4_Atlas.py",
         "pages/5_Live_analysis.py"]


@pytest.fixture
def broken(app_env, broken_store):
    app_env(broken_store)
    return broken_store


def _open(at, key: str, run_id: str):
    at.selectbox(key=key).select(run_id).run()
    assert_no_exception(at)
    return at


@pytest.mark.parametrize("page", [None, *PAGES])
def test_every_page_survives_the_broken_store(broken, page):
    at = make_app(page)
    assert_no_exception(at)
    assert not at.error  # the defaults (the newest, good run) show no error


def test_home_counts_the_unreadable_run(broken):
    at = make_app()
    (m,) = [m for m in at.metric if m.label == "Failed / unreadable"]
    assert m.value == "1"


def test_runs_corrupt_manifest(broken):
    at = _open(make_app("pages/1_Runs.py"), "runs_open", "corrupt_manifest-20000101-000000")
    errors = messages(at, "error")
    assert any("Cannot open run" in e and "unreadable" in e for e in errors)
    listed = at.dataframe[0].value
    assert "unreadable" in set(listed["status"]) and len(listed) == 9  # the list still works


def test_runs_old_format_and_missing_table(broken):
    at = _open(make_app("pages/1_Runs.py"), "runs_open", "old_format-20000101-000000")
    assert any("format_version 0" in w for w in messages(at, "warning"))
    assert at.get("plotly_chart")  # what can be shown is shown
    _open(at, "runs_open", "missing_table-20000101-000000")
    assert any("missing table(s) dla" in w for w in messages(at, "warning"))
    assert at.get("plotly_chart")


def test_runs_corrupt_table(broken):
    at = _open(make_app("pages/1_Runs.py"), "runs_open", "corrupt_table-20000101-000000")
    assert any("head_patching" in w and "unreadable" in w for w in messages(at, "warning"))
    assert at.get("plotly_chart")  # the DLA figures still render


def test_head_maps_corrupt_table_and_corrupt_manifest(broken):
    at = _open(make_app("pages/2_Head_maps.py"), "hm_run", "corrupt_table-20000101-000000")
    assert any("head_patching" in w and "skipped" in w for w in messages(at, "warning"))
    assert at.selectbox(key="hm_score_corrupt_table-20000101-000000").options == ["dla.ioi"]
    assert len(at.get("plotly_chart")) == 2
    _open(at, "hm_run", "corrupt_manifest-20000101-000000")
    assert any("Cannot open run" in e for e in messages(at, "error"))


def test_head_maps_model_that_cannot_load(broken):
    at = _open(make_app("pages/2_Head_maps.py"), "hm_run", "bad_model-20000101-000000")
    errors = messages(at, "error")
    assert any("could not be loaded" in e and "no-such-model" in e for e in errors)
    assert len(at.get("plotly_chart")) == 1  # the head map is still there
    assert any("rank" in c.value for c in at.caption) or at.dataframe  # and the head's scores


def test_live_bad_model_name(broken):
    at = make_app("pages/5_Live_analysis.py")
    at.text_input(key="live_model").input("no-such-model")
    at.button(key="live_load").click().run()
    assert_no_exception(at)
    assert any("could not be loaded" in e and "unknown model 'no-such-model'" in e for e in messages(at, "error"))
    at.button(key="live_run").click().run()
    assert_no_exception(at)
    assert any("could not be loaded" in e for e in messages(at, "error"))
    assert not at.get("plotly_chart")


@pytest.mark.parametrize(("name", "study"), [("shapes-llava", "vision_heads"), ("whisper-tiny.en", "speech_saliency")])
def test_live_refuses_non_text_models(broken, name, study):
    at = make_app("pages/5_Live_analysis.py")
    at.text_input(key="live_model").input(name)
    at.button(key="live_load").click().run()
    assert_no_exception(at)
    errors = messages(at, "error")
    assert any(f"{name}** is a" in e and "causal language models" in e and study in e for e in errors), errors


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("live_corrupt", "When Alice and Bob went to the big store, Carl gave a drink to", "tokens but corrupt has"),
        ("live_answer", " Xyzzyplughfrobnicate", "exactly one token"),
        ("live_clean", "", "clean prompt is empty"),
    ],
)
def test_live_bad_prompts(broken, field, value, message):
    at = make_app("pages/5_Live_analysis.py")
    at.text_input(key="live_model").input("tiny-llama")
    at.text_input(key=field).input(value)
    at.button(key="live_run").click().run()
    assert_no_exception(at)
    errors = messages(at, "error")
    assert any(e.startswith("Cannot run this pair") and message in e for e in errors), errors
    assert not at.get("plotly_chart")
    # fixing the prompt makes the page work again
    at.text_input(key=field).input(
        {"live_corrupt": "When Alice and Bob went to the store, Carl gave a drink to",
         "live_answer": " Mary", "live_clean": "When Mary and John went to the store, John gave a drink to"}[field])
    at.button(key="live_run").click().run()
    assert_no_exception(at)
    assert not at.error and len(at.get("plotly_chart")) == 3


def test_missing_run_store(app_env, tmp_path):
    app_env(tmp_path / "does-not-exist")
    at = make_app()
    assert any("holds no runs" in m for m in messages(at, "info"))
    for page in PAGES:
        at.switch_page(page).run()
        assert_no_exception(at)
        assert not at.error


def test_app_never_unpickles():
    io_dir = Path(__file__).resolve().parents[2] / "interp" / "io"
    checked = [*APP_DIR.rglob("*.py"), *(io_dir / n for n in ("atlas.py", "live.py", "circuit_tables.py"))]
    pattern = re.compile(r"\bpickle\b|read_pickle|torch\.load|joblib|dill")
    offenders = [str(p) for p in checked if pattern.search(p.read_text())]
    assert not offenders, offenders


def test_the_ioi_run_is_the_default(broken):
    at = make_app("pages/2_Head_maps.py")
    assert at.selectbox(key="hm_run").value == ioi_run_id(broken)
