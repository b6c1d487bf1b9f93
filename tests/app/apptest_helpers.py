"""Helpers for the app tests (imported by the test modules and conftest)."""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "app"


def ioi_run_id(root: Path) -> str:
    """The id of the tiny IOI run made by the `app_store` fixture."""
    (path,) = [p for p in root.iterdir() if p.name.startswith("tiny_ioi-")]
    return path.name


def make_app(page: str | None = None):
    """An AppTest on Home.py, switched to `page` (e.g. 'pages/2_Head_maps.py'), run once."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def messages(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def assert_no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
