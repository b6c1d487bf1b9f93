"""Which run `interp run --resume` continues, and with which config.

    run, cfg = resume_target("runs/ioi-20260101-120000")      # --resume RUN_DIR
    run, cfg = find_resumable(cfg)                             # X.yaml --resume: newest unfinished

A resumed run uses the config recorded in its own manifest (only `execution`, where the work
runs, may differ: it does not change the tables). It is refused, in one line, when the
directory is not an interp run, when the run is complete or still running, and (given a
config) when the run was made with a different config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.io.runfiles import RunStoreError
from interp.io.runstore import Run, RunStore

__all__ = ["ResumeError", "resume_target", "find_resumable", "resolve_resume", "config_differences",
           "mark_resumed"]

# Where the work runs, and where runs are stored, do not change the tables.
_IGNORED = ("execution", "output.runs_dir")
# Set per model when the run starts (unset = follow the model): a config leaving them unset
# matches the run's resolved true/false.
_FOLLOW_MODEL = ("data.prepend_bos", "data.chat")


class ResumeError(RunStoreError):
    """`--resume` cannot continue this run; the message says why and what to do."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The dotted keys where two config dicts differ (ignoring execution and the runs dir)."""
    a, b = _flat(recorded), _flat(wanted)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if not k.startswith(_IGNORED) and a.get(k) != b.get(k)
            and not (k in _FOLLOW_MODEL and b.get(k) is None)]


def _check_resumable(run: Run) -> dict[str, Any]:
    """The run's manifest, or a `ResumeError` saying why it cannot be resumed."""
    if not (run.path / "manifest.json").is_file():
        raise ResumeError(f"--resume: {run.path} is not an interp run (no manifest.json); give a run "
                          "directory made by interp run")
    manifest = run.read_manifest()
    if not isinstance(manifest.get("config"), dict) or not manifest.get("kind"):
        raise ResumeError(f"--resume: {run.path} is not an interp experiment run (its manifest has no "
                          "config and kind); give a run directory made by interp run")
    status = run.status()
    if status == "complete":
        raise ResumeError(f"--resume: run {run.run_id} is complete; there is nothing to resume "
                          "(run the config without --resume for a new run)")
    if status == "running":
        raise ResumeError(f"--resume: run {run.run_id} is still running (pid {manifest.get('pid')} on "
                          f"{manifest.get('hostname')}); only an interrupted or failed run can be resumed")
    return manifest


def _config(manifest: dict[str, Any], execution: dict[str, Any] | None) -> Any:
    from interp.io.config import parse_config

    data = dict(manifest["config"])
    if execution is not None:
        data["execution"] = execution
    return parse_config(data)


def resume_target(path: str | Path, cfg: Any = None) -> tuple[Run, Any]:
    """`--resume RUN_DIR`: the run and its recorded config (with `cfg`'s execution section when
    a config is given too, which must then match the run's)."""
    run = Run(Path(path))
    if not run.path.is_dir():
        raise ResumeError(f"--resume: {run.path} is not a directory; give a run directory (see interp runs)")
    manifest = _check_resumable(run)
    if cfg is not None:
        _check_same(run, manifest, cfg)
    return run, _config(manifest, cfg.to_dict()["execution"] if cfg is not None else None)


def _check_same(run: Run, manifest: dict[str, Any], cfg: Any) -> None:
    diff = config_differences(manifest["config"], cfg.to_dict())
    if diff:
        shown = ", ".join(diff[:5]) + (f" (and {len(diff) - 5} more)" if len(diff) > 5 else "")
        raise ResumeError(f"--resume: run {run.run_id} was made with a different config ({shown} differ); "
                          "resume it with --resume RUN_DIR alone, or run this config without --resume")


def find_resumable(cfg: Any, runs_dir: str | Path | None = None) -> tuple[Run, Any]:
    """`X.yaml --resume`: the newest interrupted or failed run named `cfg.name` in the runs dir,
    which must have been made with the same config."""
    store = RunStore(runs_dir or cfg.output.runs_dir)
    runs = store.list_runs()
    if not runs.empty:
        runs = runs[(runs["name"] == cfg.name) & runs["status"].isin(["interrupted", "failed"])]
    if runs.empty:
        raise ResumeError(f"--resume: no interrupted or failed run named {cfg.name!r} in {store.root}; "
                          "run the config without --resume, or give --resume RUN_DIR")
    return resume_target(runs.iloc[0]["path"], cfg)


def mark_resumed(run: Run, when: str, pid: int) -> None:
    """The manifest records each resume and the run is running again."""
    resumes = list(run.read_manifest().get("resumes") or [])
    resumes.append({"at": when, "pid": pid, "previous_status": run.status()})
    run.update_manifest(status="running", finished_at=None, error=None, resumes=resumes)


def resolve_resume(resume: str | bool, cfg: Any, sets: dict[str, str]) -> tuple[Any, Run]:
    """`interp run`'s `--resume [RUN_DIR]` with its config `cfg` (None when none was given, then
    only `--set execution.*` is allowed) and `--set` overrides: (config to run, run)."""
    if cfg is None:
        if resume is True:
            raise ResumeError("--resume needs a run directory (--resume RUN_DIR) or a config (X.yaml --resume)")
        other = [k for k in sets if not k.startswith("execution.")]
        if other:
            raise ResumeError(f"--resume RUN_DIR runs the run's own config; --set {other[0]} cannot change it "
                              "(only execution.* may be set)")
        run, recorded = resume_target(str(resume))
        if sets:
            from interp.io.config import with_overrides

            recorded = with_overrides(recorded, sets)
        return recorded, run
    run, recorded = resume_target(resume, cfg) if isinstance(resume, str) else find_resumable(cfg)
    return recorded, run
