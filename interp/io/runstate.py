"""Run states: the statuses a run can have, the manifest fields the run list relies on, and
the one place that decides a run's shown status (`effective_status`: a 'running' run whose
process is gone, or whose heartbeat is stale, is 'interrupted')."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT", "HEARTBEAT_STALE_S", "STATUSES", "effective_status", "manifest_problems", "pid_alive"]

STATUSES = ("running", "complete", "failed", "interrupted")
HEARTBEAT = "heartbeat"
HEARTBEAT_STALE_S = 60.0
# Manifest fields `list_runs` shows, and the types they must have (None is always allowed).
_LISTED_FIELDS = {"model_id": str, "status": str, "experiment": str, "created_at": str}


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Fields the run list relies on that have the wrong type (empty when the manifest is fine)."""
    problems = []
    for key, kind in _LISTED_FIELDS.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            problems.append(f"{key} has type {type(value).__name__}, expected {kind.__name__}")
    status = manifest.get("status")
    if isinstance(status, str) and status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    for key in ("config", "dataset"):
        if manifest.get(key) is not None and not isinstance(manifest.get(key), dict):
            problems.append(f"{key} has type {type(manifest.get(key)).__name__}, expected an object")
    return problems


def effective_status(run_dir: str | Path, manifest: dict[str, Any], *, now: float | None = None) -> Any:
    """The manifest's status, except that a 'running' run whose process is gone (its pid is
    not alive on this host) or whose heartbeat file is older than `HEARTBEAT_STALE_S` shows as
    'interrupted'. One place for `interp runs`, the atlas and the app."""
    status = manifest.get("status")
    if status != "running":
        return status
    beat = Path(run_dir) / HEARTBEAT
    try:
        age = (time.time() if now is None else now) - beat.stat().st_mtime
    except OSError:
        age = None
    if age is not None and age > HEARTBEAT_STALE_S:
        return "interrupted"
    pid = manifest.get("pid")
    same_host = manifest.get("hostname") == socket.gethostname()
    if isinstance(pid, int) and not isinstance(pid, bool) and same_host and not pid_alive(pid):
        return "interrupted"
    return status


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    try:  # Linux: a killed child that nobody reaped yet is a zombie, not a live run
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
