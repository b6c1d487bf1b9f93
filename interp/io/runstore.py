"""The run store: one directory per experiment run, holding everything needed to trust it later.

Layout of a run (`runs/<name>-<YYYYmmdd-HHMMSS>/`, the timestamp in UTC):

    manifest.json          config, model id + weights sha256, seed, package versions, git
                           commit, host, timestamps, status (written atomically)
    tables/<name>.parquet  tidy result frames (parquet only; never pickle)
    figures/<name>.html    plotly figures; they load figures/plotly.gz.js: one copy of plotly.js
                           per run (gzip-compressed, unpacked in the browser; works offline)
    heartbeat              written every few seconds by a supervised run (interp.io.lifecycle)
    report.html, *.txt     anything written with `write_text` / the report module

Example (not a doctest: it writes files):

    store = RunStore("runs")
    run = store.create("ioi")                      # runs/ioi-20250101-120000
    run.write_manifest(build_manifest(cfg.to_dict(), model_id="smollm2-135m",
                                      weights_sha256="ab12...", seed=0))
    run.write_table("head_patching", df)
    run.mark("complete")
    store.list_runs()[["run_id", "status"]]
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from interp.io.runfiles import PLOTLY_JS, RunStoreError, plotly_loader
from interp.io.runfiles import atomic_write as _atomic_write
from interp.io.runfiles import make_dir as _mkdir
from interp.io.runfiles import manifest_lock as _manifest_lock
from interp.io.runfiles import os_problem as _os_problem
from interp.io.runstate import STATUSES, effective_status, manifest_problems

__all__ = [
    "RunStore",
    "Run",
    "RunStoreError",
    "RunNotFoundError",
    "build_manifest",
    "FORMAT_VERSION",
    "STATUSES",
    "effective_status",
    "manifest_problems",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LIST_COLUMNS = ["run_id", "name", "experiment", "model", "created", "status", "path"]
_PACKAGES = ("torch", "transformers", "transformer-lens", "nnsight", "pandas", "plotly", "interp")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class RunNotFoundError(RunStoreError, FileNotFoundError):
    """`RunStore.open` was given a run id or path that does not exist."""


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise RunStoreError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '-' and '.' "
            "(no slashes, not starting with '.')"
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


class Run:
    """One run directory. Cheap to construct; files are read and written on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    # --- manifest ---------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default)
        _atomic_write(self.manifest_path, (text + "\n").encode("utf-8"))
        return self.manifest_path

    def read_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunStoreError(f"{self.path} has no {MANIFEST}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunStoreError(f"{self.manifest_path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise RunStoreError(f"{self.manifest_path} must hold a JSON object")
        return data

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the manifest (creating it if absent) and write it back, under a
        per-file lock (and atomically: readers see the old or the new manifest, never half)."""
        with _manifest_lock(self.manifest_path):
            manifest = self.read_manifest() if self.manifest_path.exists() else {}
            manifest.update(fields)
            self.write_manifest(manifest)
        return manifest

    def add_done_shard(self, step: str, key: str) -> None:
        """Record a finished shard under `shards_done[step]` (read-modify-write under the same
        lock as `update_manifest`; the heartbeat never touches the manifest)."""
        with _manifest_lock(self.manifest_path):
            manifest = self.read_manifest()
            done = manifest.setdefault("shards_done", {})
            if key not in done.setdefault(step, []):
                done[step].append(key)
                self.write_manifest(manifest)

    def status(self) -> str:
        """The manifest's status, corrected for a run whose process is gone (`effective_status`)."""
        return effective_status(self.path, self.read_manifest())

    def mark(self, status: str, error: BaseException | str | None = None) -> dict[str, Any]:
        """Set `status` (one of `STATUSES`), `finished_at` and `error`."""
        if status not in STATUSES:
            raise RunStoreError(f"invalid status {status!r}; allowed: {', '.join(STATUSES)}")
        finished = None if status == "running" else _now().isoformat(timespec="seconds")
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        return self.update_manifest(status=status, finished_at=finished, error=error)

    # --- tables -----------------------------------------------------------------------
    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        _check_name(name, "table")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"write_table expects a pandas DataFrame, got {type(df).__name__}")
        path = self.path / "tables" / f"{name}.parquet"
        _mkdir(path.parent)
        _atomic_write(path, df.to_parquet())
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        path = self.path / "tables" / f"{_check_name(name, 'table')}.parquet"
        if not path.is_file():
            available = ", ".join(self.tables()) or "none"
            raise RunStoreError(f"run {self.run_id} has no table {name!r}; tables: {available}")
        return pd.read_parquet(path)

    def tables(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "tables").glob("*.parquet"))

    # --- figures and text -------------------------------------------------------------
    def write_figure(self, name: str, fig: Any) -> Path:
        """Save a plotly figure as an HTML file next to one shared `figures/plotly.min.js`
        (written with the first figure; the page loads it by relative path, offline)."""
        path = self.path / "figures" / f"{_check_name(name, 'figure')}.html"
        _mkdir(path.parent)
        script = path.parent / PLOTLY_JS
        if not script.is_file():
            _atomic_write(script, plotly_loader())
        html = fig.to_html(include_plotlyjs=PLOTLY_JS, full_html=True)
        _atomic_write(path, html.encode("utf-8"))
        return path

    def standalone_figure(self, name: str) -> bytes:
        """A figure page with the shared script inlined: one file to download that opens
        anywhere, offline (pages written before the shared script are returned as they are)."""
        path = self.path / "figures" / f"{_check_name(name, 'figure')}.html"
        html = path.read_bytes()
        tag = f'<script charset="utf-8" src="{PLOTLY_JS}"></script>'.encode()
        if tag not in html:
            return html
        return html.replace(tag, b'<script type="text/javascript">' + plotly_loader() + b"</script>", 1)

    def figures(self) -> list[str]:
        """Figure names (`figures/<name>.html`)."""
        return sorted(p.stem for p in (self.path / "figures").glob("*.html"))

    def write_text(self, name: str, text: str) -> Path:
        """Write `text` to `<run>/<name>` (give the extension: 'summary.md')."""
        path = self.path / _check_name(name, "text file")
        _atomic_write(path, text.encode("utf-8"))
        return path


class RunStore:
    """A directory of runs (`root`, default `runs/` in the current directory)."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def create(self, name: str) -> Run:
        """Make `root/<name>-<YYYYmmdd-HHMMSS>` (UTC), adding `-2`, `-3`, ... if it exists."""
        _check_name(name, "run")
        _mkdir(self.root)
        base = f"{name}-{_now():%Y%m%d-%H%M%S}"
        for i in range(1, 10_000):
            path = self.root / (base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()  # not exist_ok: the mkdir itself claims the name (no race)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_problem(exc, "create run directory", path) from None
            return Run(path)
        raise RunStoreError(f"could not find a free run directory name for {base!r} in {self.root}")

    def open(self, run_id_or_path: str | Path) -> Run:
        """A run by id (a directory name under `root`) or by path."""
        for candidate in (self.root / str(run_id_or_path), Path(run_id_or_path)):
            if candidate.is_dir():
                return Run(candidate)
        ids = [p.name for p in self._run_dirs()]
        shown = ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")
        known = f"; runs: {shown}" if ids else f"; {self.root} holds no runs"
        raise RunNotFoundError(f"no run {str(run_id_or_path)!r} in {self.root}{known}")

    def list_runs(self) -> pd.DataFrame:
        """One row per run (newest first). A corrupt manifest shows as status 'unreadable', one
        with wrong-typed fields as 'invalid' (`manifest_problems` says why); a 'running' run whose
        process is gone shows as 'interrupted' (`effective_status`)."""
        rows = [_list_row(path) for path in self._run_dirs()]
        df = pd.DataFrame(rows, columns=LIST_COLUMNS)
        if df.empty:
            return df
        return df.sort_values(
            ["created", "run_id"], ascending=False, na_position="last"
        ).reset_index(drop=True)

    def _run_dirs(self) -> list[Path]:
        """Subdirectories that have a manifest file (readable or not), oldest name first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST).exists())


def _list_row(path: Path) -> dict[str, Any]:
    """`list_runs`' row for one run directory; never raises for a bad manifest."""
    base = dict.fromkeys(LIST_COLUMNS) | {"run_id": path.name, "path": str(path)}
    try:
        manifest = Run(path).read_manifest()
    except RunStoreError:
        return base | {"status": "unreadable"}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    problems = manifest_problems(manifest)
    return base | {
        "name": text(config.get("name")),
        "experiment": text(manifest.get("experiment")),
        "model": text(manifest.get("model_id")) or text(model.get("name")),
        "created": text(manifest.get("created_at")),
        "status": "invalid" if problems else effective_status(path, manifest),
    }


def build_manifest(
    config_dict: dict[str, Any],
    *,
    model_id: str,
    weights_sha256: str | None,
    seed: int,
    extra: dict[str, Any] | None = None,
    cwd: str | Path | None = None,
) -> dict[str, Any]:
    """Everything needed to reproduce a run. `extra` keys are added at the top level (e.g.
    `{"experiment": "experiments/ioi.yaml"}`, shown by `list_runs`); `cwd` is where the git
    commit is read (default: the current directory)."""
    commit, dirty = _git_state(Path(cwd) if cwd is not None else Path.cwd())
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": config_dict,
        "model_id": model_id,
        "weights_sha256": weights_sha256,
        "seed": seed,
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),  # with hostname: a run whose process is gone shows as interrupted
        # microseconds: runs made within one second still sort newest first
        "created_at": _now().isoformat(timespec="microseconds"),
        "finished_at": None,
        "status": "running",
    }
    clash = sorted(set(extra or {}) & set(manifest))
    if clash:
        raise RunStoreError(f"extra manifest keys {clash} would overwrite standard fields")
    return manifest | dict(extra or {})


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the work tree has changes); (None, None) outside a git repo."""
    # --no-optional-locks: `git status` must not take index.lock while someone else commits.
    base = ["git", "--no-optional-locks", "-C", str(cwd)]
    try:
        head = subprocess.run(
            [*base, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            [*base, "status", "--porcelain"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"manifest value of type {type(value).__name__} is not JSON-serialisable")
