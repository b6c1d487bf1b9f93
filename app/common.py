"""Helpers shared by the pages: where the run store is, safe readers that turn every failure
into an `st.error`/`st.warning`, the cached model and atlas, and small widgets (run picker,
head picker). No tensor math here: numbers come from `interp`'s public API.

The run store is `$INTERP_RUNS_DIR` (set by `interp app --runs-dir`), else `runs/`.
Only parquet, JSON and HTML files are read from it; nothing is ever unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from interp.io.atlas import Atlas, build_atlas, run_problems
from interp.io.runstore import Run, RunStore, RunStoreError

RUNS_DIR_ENV = "INTERP_RUNS_DIR"


# --- page frame ---------------------------------------------------------------------------
TOKEN_ENV = "INTERP_APP_TOKEN"


def page(title: str, icon: str) -> None:
    """Every page starts here: its config, then the token gate (when the app has a token)."""
    st.set_page_config(page_title=f"{title} - interp", page_icon=icon, layout="wide")
    require_token()


def require_token() -> None:
    """With `$INTERP_APP_TOKEN` set (`interp app --token`), nothing renders until the session
    has given that token; a wrong one shows an error. Without it, a no-op."""
    import hmac

    expected = os.environ.get(TOKEN_ENV)
    if not expected or st.session_state.get("_interp_token_ok"):
        return
    st.title("interp workbench")
    given = st.text_input("Access token", type="password", key="_interp_token",
                          help="this app was started with a token (interp app --token / $INTERP_APP_TOKEN)")
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        st.session_state["_interp_token_ok"] = True
        st.rerun()
    if given:
        st.error("Wrong token.")
    st.stop()


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show any error inside the block as one `st.error` (no traceback); the page goes on.

    Streamlit's own control flow (st.stop, reruns) derives from BaseException and passes."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: a message, not a traceback
        st.error(f"{what} failed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    from interp.core.errors import InterpError

    text = str(exc).strip() or "no details"
    return text if isinstance(exc, InterpError) else f"{type(exc).__name__}: {text}"


# --- the run store ------------------------------------------------------------------------
def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def store() -> RunStore:
    return RunStore(runs_dir())


def list_runs() -> pd.DataFrame:
    try:
        return store().list_runs()
    except Exception as exc:  # noqa: BLE001 - e.g. a permission error on the directory
        st.error(f"cannot list the run store {runs_dir()}: {_describe(exc)}")
        return pd.DataFrame(columns=["run_id", "name", "experiment", "model", "created", "status", "path"])


def no_runs_message() -> None:
    st.info(
        f"The run store **{runs_dir()}** holds no runs yet. Make one with "
        "`interp run experiments/ioi.yaml` (or `interp app --runs-dir DIR` to browse another "
        "store), or save a live analysis from the **Live analysis** page."
    )


def filter_runs(df: pd.DataFrame, text: str = "", statuses: list[str] | None = None,
                models: list[str] | None = None) -> pd.DataFrame:
    """Rows matching `text` (in id, name, experiment, model) and the chosen statuses/models."""
    out = df
    if text:
        cols = ["run_id", "name", "experiment", "model"]
        hay = out[cols].apply(lambda c: c.map(lambda v: "" if pd.isna(v) else str(v))).agg(" ".join, axis=1)
        hay = hay.str.lower()
        out = out[hay.str.contains(text.lower(), regex=False)]
    if statuses:
        out = out[out["status"].isin(statuses)]
    if models:
        out = out[out["model"].isin(models)]
    return out.reset_index(drop=True)


def open_run(run_id: str) -> tuple[Run, dict[str, Any]] | None:
    """The run and its manifest, or None after showing why it cannot be opened; format
    problems (old version, missing tables) are shown as warnings and the run is returned."""
    try:
        run = store().open(run_id)
        manifest = run.read_manifest()
    except RunStoreError as exc:
        st.error(f"Cannot open run **{run_id}**: {exc}")
        return None
    for problem in run_problems(run, manifest):
        st.warning(problem)
    return run, manifest


def read_table(run: Run, name: str, *, quiet: bool = False) -> pd.DataFrame | None:
    """A run table, or None (with a warning unless `quiet`) when missing or unreadable."""
    if name not in run.tables():
        if not quiet:
            st.warning(f"Run {run.run_id} has no table **{name}**.")
        return None
    try:
        return run.read_table(name)
    except Exception as exc:  # noqa: BLE001 - corrupt parquet raises arrow/OS errors
        st.warning(f"Table **{name}** of run {run.run_id} is unreadable ({_describe(exc)}).")
        return None


def file_bytes(path: Path):
    """Deferred file contents for `st.download_button` (read only when the user clicks)."""

    def read() -> bytes:
        return path.read_bytes()

    return read


def figure_bytes(run: Run, name: str):
    """Deferred standalone figure page (plotly inlined) for `st.download_button`."""

    def read() -> bytes:
        return run.standalone_figure(name)

    return read


def run_picker(runs: pd.DataFrame, key: str, label: str = "Run", help: str | None = None) -> str | None:
    """A selectbox of run ids (newest first), preset from the `run` query parameter."""
    ids = runs["run_id"].tolist()
    if not ids:
        return None
    wanted = st.query_params.get("run")
    if key not in st.session_state or st.session_state[key] not in ids:
        st.session_state[key] = wanted if wanted in ids else ids[0]
    labels = {r.run_id: f"{r.run_id}  ·  {r.model or '?'}  ·  {r.status}" for r in runs.itertuples()}
    chosen = st.selectbox(label, ids, key=key, format_func=lambda i: labels.get(i, i), help=help)
    if chosen and st.query_params.get("run") != chosen:
        st.query_params["run"] = chosen
    return chosen


# --- heads ----------------------------------------------------------------------------------
def head_label(layer: int, head: int) -> str:
    return f"L{int(layer)}H{int(head)}"


def parse_head(label: str) -> tuple[int, int]:
    layer, head = label[1:].split("H")
    return int(layer), int(head)


def clicked_head(chart_key: str) -> tuple[int, int] | None:
    """The head of the last clicked/selected cell of a `clickable_head_map` chart, if any."""
    event = st.session_state.get(chart_key)
    try:
        points = event["selection"]["points"] if event else []
    except (KeyError, TypeError):
        return None
    for p in reversed(points or []):
        x, y = p.get("x"), p.get("y")
        if isinstance(x, int | float) and isinstance(y, int | float):
            return int(y), int(x)
    return None


def on_head_click(chart_key: str, picker_key: str, options: list[str]):
    """An `on_select` callback for a `clickable_head_map` chart: a clicked (or box-selected)
    cell selects that head in the picker. Callbacks run before the script, so the picker
    shows the new head in the same rerun."""

    def callback() -> None:
        head = clicked_head(chart_key)
        if head is not None and head_label(*head) in options:
            st.session_state[picker_key] = head_label(*head)

    return callback


# --- cached resources -----------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=3)
def _cached_model(name: str, device: str, seed: int):
    from interp import load_model

    return load_model(name, device=device, seed=seed)


def load_model_or_error(name: str, device: str = "cpu", seed: int = 0):
    """The model (loaded once per process, then cached), or None after an `st.error`."""
    if not name or not name.strip():
        st.error("Give a model name, e.g. `smollm2-135m` or `tiny-llama`.")
        return None
    modality = _modality(name.strip())
    if modality != "text":
        study = {"speech": "experiments/speech_saliency.yaml", "vision": "experiments/vision_heads.yaml"}.get(modality)
        st.error(f"**{name}** is a {modality} model; this page runs on causal language models "
                 f"({', '.join(text_model_names())}, a local directory or a hub id)."
                 + (f" Its study runs with `interp run {study}`." if study else ""))
        return None
    try:
        with st.spinner(f"Loading {name} on {device} (once; cached afterwards)..."):
            return _cached_model(name.strip(), device, int(seed))
    except Exception as exc:  # noqa: BLE001 - any loading failure becomes a message
        st.error(f"Model **{name}** could not be loaded: {_describe(exc)}")
        return None


def _modality(name: str) -> str:
    from interp.models.registry import describe_model_name

    try:
        return describe_model_name(name).modality
    except Exception:  # noqa: BLE001 - an unknown name is reported by the loader
        return "text"


def text_model_names() -> list[str]:
    """Known model names the text pages (live analysis, attention patterns) can load."""
    from interp.models.registry import known_names

    return [n for n in known_names() if _modality(n) == "text"]


def available_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _store_signature(root: Path) -> tuple:
    """Changes whenever a run is added, removed or rewritten (manifest or tables)."""
    if not root.is_dir():
        return ()
    sig = []
    for p in sorted(root.iterdir()):
        man, tables = p / "manifest.json", p / "tables"
        if man.exists():
            sig.append((p.name, man.stat().st_mtime_ns,
                        tables.stat().st_mtime_ns if tables.is_dir() else 0))
    return tuple(sig)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_atlas(root: str, signature: tuple, grid: str | None = None) -> Atlas:
    return build_atlas(RunStore(root), grid=grid)


def atlas(grid: str | None = None) -> Atlas | None:
    """The atlas of the run store (of the runs of one grid, when `grid` names its id)."""
    root = runs_dir()
    try:
        return _cached_atlas(str(root), _store_signature(root), grid)
    except Exception as exc:  # noqa: BLE001
        st.error(f"The head atlas could not be built: {_describe(exc)}")
        return None


def grid_picker(key: str) -> str | None:
    """A selectbox of the grids in the run store ("all runs" first); None for all runs."""
    from interp.io.grid import grid_ids

    try:
        ids = grid_ids(store())
    except Exception as exc:  # noqa: BLE001
        st.warning(f"The grids of the run store could not be read: {_describe(exc)}")
        return None
    if not ids:
        return None
    chosen = st.selectbox("Runs", ["all runs", *ids], key=key, format_func=lambda g: g if g == "all runs"
                          else f"runs of grid {g}", help="a grid's runs read together (interp run GRID.yaml)")
    return None if chosen == "all runs" else chosen


def show_notes(notes: list[str], what: str) -> None:
    if notes:
        with st.expander(f"{len(notes)} {what} skipped or incomplete"):
            for n in notes:
                st.warning(n)
