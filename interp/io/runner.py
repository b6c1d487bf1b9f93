"""Run an experiment config end to end: preflight, model, data, the kind's steps, report.

The runner is the only writer: each step (`interp.io.step`) returns its tables, figures and
text files, and the runner writes them as soon as the step finishes and records it in the
manifest's `analyses_done`, so a run that fails later keeps what it finished (status "failed"
with the error). It also owns the progress bars the steps ask for.

    cfg = load_config("experiments/ioi.yaml")
    run = run_experiment(cfg, config_path="experiments/ioi.yaml")
    run.read_table("head_patching")
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.io.execution import ShardStore, StoredExecutor, check_execution, open_executor
from interp.io.kinds.patching import load_data  # noqa: F401  (re-exported: callers import it from here)
from interp.io.lifecycle import RunInterrupted, supervised
from interp.io.limits import check_work
from interp.io.preflight import preflight
from interp.io.registry import get_kind
from interp.io.report import ReportSection, write_report
from interp.io.resume import mark_resumed
from interp.io.runstore import Run, RunStore, build_manifest
from interp.io.schema import resolve_for_model
from interp.io.step import Progress, StepContext, StepResult
from interp.models.loading import load_model

__all__ = ["run_experiment", "RunOutcome", "ProgressBars"]

Log = Callable[[str], None]


@dataclass
class RunOutcome:
    """What the steps have produced so far: report sections, summary lines, finished analyses."""

    run: Run
    sections: list[ReportSection] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def record(self, result: StepResult) -> None:
        """Write one step's tables, figures, files and manifest keys; then mark it done (a
        later failure keeps it)."""
        run = self.run
        if result.manifest:
            run.update_manifest(**result.manifest)
        for name, table in result.tables.items():
            run.write_table(name, table)
        for name, text in result.texts.items():
            run.write_text(name, text)
        for name, fig in result.figures.items():
            run.write_figure(name, fig)
        if result.lead:
            self.summary[:0], self.sections[:0] = result.summary, result.sections
        else:
            self.summary.extend(result.summary)
            self.sections.extend(result.sections)
        if result.done:
            self.done.append(result.done)
            run.update_manifest(analyses_done=list(self.done))


class ProgressBars:
    """The bars of one step: `new(desc)` opens one and returns its (done, total) callback;
    `close()` closes every bar opened since the last close."""

    def __init__(self, show: bool):
        self.show, self.open = show, []

    def new(self, desc: str) -> Progress:
        # disable=None: no bar when stderr is not a terminal (CI logs stay readable)
        bar = tqdm(total=0, desc=desc, disable=None if self.show else True, leave=True)
        self.open.append(bar)

        def fn(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()

        return fn

    def close(self) -> None:
        for bar in self.open:
            bar.close()
        self.open.clear()


def run_experiment(
    cfg: Any,
    *,
    config_path: str | Path | None = None,
    runs_dir: str | Path | None = None,
    show_progress: bool = True,
    log: Log = print,
    model: Any = None,
    force: bool = False,
    resume: Run | None = None,
) -> Run:
    """Run any registered experiment kind (`cfg.kind`) end to end and return its run. `force`
    runs even when the estimated work exceeds `interp.io.limits.MAX_FORWARDS`. `resume`: an
    unfinished run (`interp.io.resume`) to continue in place, reusing its finished shards."""
    kind = get_kind(cfg.kind)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    preflight(cfg, model.tokenizer if model is not None else None, runs_dir=runs_dir, force=force)  # no weights yet
    check_execution(cfg)
    if model is None:
        log(f"loading model {cfg.model.name} ({cfg.model.device}, {cfg.model.dtype})")
        model = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype, seed=cfg.seed,
                           device_map=cfg.model.device_map, max_memory=cfg.model.max_memory,
                           offload_folder=cfg.model.offload_folder)
    # Defaults that follow the model (data.chat, data.prepend_bos) become plain true/false here,
    # before any data is built: a setting the model cannot honour fails in one line, and the
    # manifest records what was used.
    cfg = resolve_for_model(cfg, model)
    bars = ProgressBars(show_progress)  # before prepare: its generators show progress from the start
    try:
        data = kind.prepare_data(cfg, model, log, progress=bars.new)
    finally:
        bars.close()
    check_work(kind, cfg, model, data, force=force)  # work and memory, before the run directory exists
    with open_executor(cfg, model, log) as executor:  # before the run directory: bad addresses fail first
        if resume is None:
            run = _create_run(cfg, model, kind.name, config_path, runs_dir)
        else:
            run = resume
            mark_resumed(run, _now(), os.getpid())
        log(f"{'resuming run' if resume is not None else 'run'} directory: {run.path}")
        ctx = StepContext(cfg, model, data, log=log, progress=bars.new,
                          executors=lambda step: StoredExecutor(executor, ShardStore(run, step), log))
        out = _execute(run, cfg, kind, ctx, bars, t0)
    path = _report(run, cfg, out)
    log("")
    for line in out.summary:
        log(line)
    log(f"report: {path}")
    return run


def _execute(run: Run, cfg: Any, kind: Any, ctx: StepContext, bars: ProgressBars, t0: float) -> RunOutcome:
    """Every step of the kind, supervised; each step's result recorded as it finishes."""
    out = RunOutcome(run)
    with supervised(run):  # SIGINT/SIGTERM: status interrupted, exit 130/143; pid, host, heartbeat
        try:
            for step in kind.steps:
                result = step(ctx)
                bars.close()
                if result is not None:
                    out.record(result)
        except BaseException as e:
            bars.close()
            run.mark("interrupted" if isinstance(e, RunInterrupted) else "failed", error=e)
            _report(run, cfg, out, failed=True)
            raise
        run.update_manifest(duration_s=round(time.perf_counter() - t0, 2))
        run.mark("complete")
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _create_run(cfg: Any, model: Any, kind: str, config_path, runs_dir) -> Run:
    run = RunStore(runs_dir or cfg.output.runs_dir).create(cfg.name)
    manifest = build_manifest(
        cfg.to_dict(), model_id=model.name, weights_sha256=model.weights_sha256, seed=cfg.seed,
        extra={
            "experiment": str(config_path) if config_path else None,
            "kind": kind,
            "backend": model.backend,
            "device": str(model.device),
            "model_spec": vars(model.spec),
            "analyses_done": [],
        },
    )
    run.write_manifest(manifest)
    return run


def _report(run: Run, cfg: Any, out: RunOutcome, failed: bool = False) -> Path:
    lines = list(out.summary)
    if failed:
        stopped = "was INTERRUPTED" if run.read_manifest().get("status") == "interrupted" else "FAILED"
        lines.insert(0, f"This run {stopped}; the sections below are the analyses it finished.")
    return write_report(run, title=f"{cfg.name}: {cfg.description or 'experiment'}", summary_lines=lines,
                        sections=out.sections)
