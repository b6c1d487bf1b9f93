"""Grids (issue 15 item 3): one YAML runs a study over several models, seeds and datasets.

    name: grid_ioi_tiny
    model: {name: tiny-llama}
    data: {n_prompts: 4}
    grid:
      model.name: [tiny-llama, tiny-gpt2]
      seed: [0, 1]

The keys of `grid:` are dotted config paths (the syntax of `--set`), the values non-empty lists;
the cells are their cartesian product in a fixed order: the keys in the order the YAML writes
them, the last key varying fastest (above: cell 0 = tiny-llama/0, 1 = tiny-llama/1,
2 = tiny-gpt2/0, 3 = tiny-gpt2/1). Each cell is a full config, validated before anything runs
(every invalid cell reported, naming the cell and the field), and runs with `run_experiment`
(whatever execution engine its config names) as one run of the run store; the run's manifest
records `grid: {id, cell, n_cells, values}`. A failing cell does not stop the others.

The grid id is the experiment name and a digest of the YAML (and the `--set` overrides), so the
same grid run again finds its earlier runs: with `resume` the cells whose run completed are
skipped and the others run again.

    grid = load_grid("experiments/grid_ioi_tiny.yaml")
    outcome = run_grid(grid, resume=True)
    grid_runs(RunStore("runs"), grid.id)       # one row per run of the grid
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interp.core.errors import ConfigError, InterpError
from interp.io.config import GRID_KEY, _parse_scalar, is_grid, parse_config, read_yaml, set_dotted
from interp.io.runstore import Run, RunStore, RunStoreError

__all__ = ["Cell", "Grid", "CellOutcome", "GridOutcome", "load_grid", "expand_grid", "run_grid", "validate_grid",
           "run_grid_file", "validate_grid_file", "with_grid_column", "grid_runs", "grid_ids", "grid_label",
           "require_grid", "MAX_CELLS"]

MAX_CELLS = 1000
Log = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    index: int
    values: dict[str, Any]  # grid key -> this cell's value
    cfg: Any

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.values.items())

    def record(self, grid: Grid) -> dict[str, Any]:
        """What the run's manifest says about its place in the grid."""
        return {"id": grid.id, "cell": self.index, "n_cells": len(grid.cells), "values": self.values,
                "file": grid.file}


@dataclass(frozen=True)
class Grid:
    id: str
    file: str | None
    keys: tuple[str, ...]
    cells: tuple[Cell, ...]


def _show(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def load_grid(path: str | Path, overrides: Mapping[str, str] | None = None) -> Grid:
    """The grid of a YAML file (a YAML without `grid:` is a grid of one cell), every cell
    validated; `overrides` (the CLI's `--set`) apply to every cell."""
    data = read_yaml(path)
    if not is_grid(data):
        data = {**data, GRID_KEY: {}} if isinstance(data, Mapping) else data
    return expand_grid(data, file=str(path), overrides=overrides)


def _check_grid(spec: Any, file: str | None) -> dict[str, list]:
    if not isinstance(spec, Mapping):
        raise ConfigError("must be a mapping of config paths to lists of values, e.g. "
                          "{model.name: [tiny-llama, tiny-gpt2], seed: [0, 1]}", path=GRID_KEY, file=file)
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise ConfigError("must be a non-empty list of values", path=f"{GRID_KEY}.{key}", file=file)
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise ConfigError("lists a value twice (two identical cells)", path=f"{GRID_KEY}.{key}", file=file)
        if key in (GRID_KEY, "name"):
            raise ConfigError(f"{key!r} cannot vary in a grid (the cells of one grid share one name)",
                              path=f"{GRID_KEY}.{key}", file=file)
    n = 1
    for values in spec.values():
        n *= len(values)
    if n > MAX_CELLS:
        raise ConfigError(f"{n} cells is more than {MAX_CELLS}; split the study into several grids",
                          path=GRID_KEY, file=file)
    return {str(k): list(v) for k, v in spec.items()}


def _grid_id(data: Mapping, overrides: Mapping[str, str]) -> str:
    text = json.dumps({"config": data, "set": dict(overrides)}, sort_keys=True, default=str)
    name = data.get("name") if isinstance(data.get("name"), str) else "grid"
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def expand_grid(data: Any, *, file: str | None = None, overrides: Mapping[str, str] | None = None,
                base_dir: str | Path | None = None) -> Grid:
    """Every cell of parsed grid YAML, each a validated config; raises one `ConfigError` that
    lists every invalid cell (its index, its values, the field and what is wrong)."""
    if not isinstance(data, Mapping):
        parse_config(data, file=file)  # says what is wrong with it
    overrides = dict(overrides or {})
    spec = _check_grid(data[GRID_KEY], file)
    for key in overrides:
        if key in spec:
            raise ConfigError("is set by the grid; change the grid's list instead of --set", path=key, file=file)
    base = {k: v for k, v in data.items() if k != GRID_KEY}
    cells, problems = [], []
    for i, combo in enumerate(itertools.product(*spec.values())):
        values = dict(zip(spec, combo, strict=True))
        try:
            cells.append(Cell(i, values, _cell_config(base, overrides, values, file, base_dir)))
        except ConfigError as e:
            problems.append(f"cell {i} ({Cell(i, values, None).label}): {_without_file(e, file)}")
    if problems:
        n = len(problems) + len(cells)
        raise ConfigError(f"{len(problems)} of {n} cells are invalid:\n  " + "\n  ".join(problems),
                          path=GRID_KEY, file=file)
    return Grid(_grid_id(data, overrides), file, tuple(spec), tuple(cells))


def _cell_config(base: Mapping, overrides: Mapping[str, str], values: Mapping[str, Any], file: str | None,
                 base_dir: str | Path | None) -> Any:
    data = copy.deepcopy(dict(base))
    for key, raw in overrides.items():
        set_dotted(data, key, _parse_scalar(raw) if isinstance(raw, str) else raw)
    for key, value in values.items():
        set_dotted(data, key, copy.deepcopy(value))
    return parse_config(data, file=file, base_dir=base_dir)


def _without_file(e: ConfigError, file: str | None) -> str:
    text = str(e)
    return text[len(file) + 2:] if file and text.startswith(f"{file}: ") else text


def validate_grid(grid: Grid, check: Callable[[Any], list[str]]) -> list[str]:
    """`check(cfg)` (e.g. the preflight) on every cell: the lines to print; raises one
    `ConfigError` listing every cell that fails, by index and values."""
    lines, problems = [], []
    for cell in grid.cells:
        try:
            lines += [f"cell {cell.index} ({cell.label}): {line}" for line in check(cell.cfg)]
        except InterpError as e:
            problems.append(f"cell {cell.index} ({cell.label}): {_without_file(e, grid.file)}")  # type: ignore[arg-type]
    if problems:
        raise ConfigError(f"{len(problems)} of {len(grid.cells)} cells fail their checks:\n  " + "\n  ".join(problems),
                          path=GRID_KEY, file=grid.file)
    return lines


def validate_grid_file(path: str | Path, overrides: Mapping[str, str] | None = None, *,
                       force: bool = False) -> list[str]:
    """`interp validate` on a grid YAML: every cell's config and its preflight (no weights);
    the lines to print, or one `ConfigError` listing every failing cell."""
    from interp.io.preflight import preflight

    grid = load_grid(path, overrides)  # every cell's config first
    lines = validate_grid(grid, lambda cfg: preflight(cfg, force=force))
    kinds = sorted({c.cfg.kind for c in grid.cells})
    return [f"{path}: ok (grid {grid.id}, {len(grid.cells)} cells over {', '.join(grid.keys) or 'no key'}; "
            f"kind {', '.join(kinds)})", *(f"  {line}" for line in lines)]


# ------------------------------------------------------------------------------ running


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # complete | failed | skipped
    run_id: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def line(self, n: int) -> str:
        head = f"cell {self.cell.index + 1}/{n} ({self.cell.label}):"
        if self.status == "skipped":
            return f"{head} skipped, already complete in run {self.run_id}"
        if self.status == "complete":
            return f"{head} complete, run {self.run_id} ({self.seconds:.1f} s)"
        where = f" (run {self.run_id})" if self.run_id else ""
        return f"{head} FAILED{where}: {self.error}"


@dataclass
class GridOutcome:
    grid: Grid
    cells: list[CellOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[CellOutcome]:
        return [c for c in self.cells if c.status == "failed"]

    def lines(self) -> list[str]:
        n = len(self.grid.cells)
        done = sum(c.status != "failed" for c in self.cells)
        return [c.line(n) for c in self.cells] + [f"grid {self.grid.id}: {done} of {n} cells complete" + (
            f"; failed: cells {', '.join(str(c.cell.index + 1) for c in self.failed)}" if self.failed else "")]


def _store(cell: Cell, runs_dir: str | Path | None) -> RunStore:
    return RunStore(runs_dir or cell.cfg.output.runs_dir)


def _run_ids(store: RunStore) -> set[str]:
    return set(store.list_runs()["run_id"]) if store.root.is_dir() else set()


def run_grid(grid: Grid, *, runs_dir: str | Path | None = None, show_progress: bool = True, log: Log = print,
             force: bool = False, resume: bool = False, run: Callable[..., Run] | None = None) -> GridOutcome:
    """Run the cells one after another (`run_experiment` each; `run` replaces it in tests), each
    recorded in its manifest as a cell of the grid; a failing cell is reported and the next one
    runs. With `resume`, a cell that already has a complete run of this grid is skipped. An
    interrupt (Ctrl-C, SIGTERM) stops the grid after recording the cell it stopped."""
    if run is None:
        from interp.io.runner import run_experiment as run
    outcome = GridOutcome(grid)
    for cell in grid.cells:
        store = _store(cell, runs_dir)
        earlier = _complete_cells(store, grid.id) if resume else {}
        if cell.index in earlier:
            outcome.cells.append(CellOutcome(cell, "skipped", run_id=earlier[cell.index]))
            log(outcome.cells[-1].line(len(grid.cells)))
            continue
        # an interrupted or failed run of this cell continues in place, reusing its finished shards
        unfinished = _unfinished_cells(store, grid.id).get(cell.index) if resume else None
        again = f", resuming run {unfinished.run_id}" if unfinished else ""
        log(f"grid {grid.id}: cell {cell.index + 1}/{len(grid.cells)} ({cell.label}){again}")
        outcome.cells.append(_run_cell(grid, cell, store, run, runs_dir=runs_dir, show_progress=show_progress,
                                       log=log, force=force, **({"resume": unfinished} if unfinished else {})))
        log(outcome.cells[-1].line(len(grid.cells)))
    return outcome


def run_grid_file(path: str | Path, overrides: Mapping[str, str] | None = None, *, threads: int | None = None,
                  resume: bool | str | None = None, log: Log = print, **kw: Any) -> GridOutcome:
    """`interp run` on a grid YAML: load and validate every cell, run them (`run_grid`), then
    print one line per cell and the grid's total. `resume` True (the CLI's bare `--resume`)
    skips complete cells; a RUN_DIR there is for one run, not a grid."""
    if isinstance(resume, str):
        raise InterpError(f"--resume {resume}: a grid resumes with a bare --resume (its complete cells are "
                          "skipped); --resume RUN_DIR resumes one run")
    grid = load_grid(path, overrides)
    if threads is not None:
        if threads < 1:
            raise InterpError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    log(f"grid {grid.id}: {len(grid.cells)} cells over {', '.join(grid.keys) or 'no key'}")
    outcome = run_grid(grid, log=log, resume=bool(resume), **kw)
    log("")
    for line in outcome.lines():
        log(line)
    return outcome


def _run_cell(grid: Grid, cell: Cell, store: RunStore, run: Callable[..., Run], **kw: Any) -> CellOutcome:
    before, t0 = _run_ids(store), time.perf_counter()
    cfg = cell.cfg
    if kw.get("runs_dir"):  # one place for the run store, so kinds that read earlier runs see it too
        from interp.io.config import with_overrides

        cfg = with_overrides(cfg, {"output.runs_dir": str(kw["runs_dir"])})
    try:
        result = run(cfg, config_path=grid.file, **kw)
    except Exception as e:  # noqa: BLE001 (a failing cell is reported; the next one runs)
        run_id = _record_new(grid, cell, store, before)
        return CellOutcome(cell, "failed", run_id=run_id, error=str(e) or type(e).__name__,
                           seconds=time.perf_counter() - t0)
    except BaseException:  # interrupted: record the cell's run, then stop the grid
        _record_new(grid, cell, store, before)
        raise
    result.update_manifest(grid=cell.record(grid))
    return CellOutcome(cell, "complete", run_id=result.run_id, seconds=time.perf_counter() - t0)


def _record_new(grid: Grid, cell: Cell, store: RunStore, before: set[str]) -> str | None:
    """Mark the run a failed or interrupted cell left (if it got as far as a run directory)."""
    new = sorted(_run_ids(store) - before)
    for run_id in new:
        try:
            store.open(run_id).update_manifest(grid=cell.record(grid))
        except (RunStoreError, OSError):
            pass
    return new[-1] if new else None


# ------------------------------------------------------------------------------ reading


GRID_RUN_COLUMNS = ["run_id", "path", "grid", "cell", "n_cells", "values", "model", "status", "created"]


def grid_runs(store: RunStore, grid_id: str | None = None) -> pd.DataFrame:
    """The runs of grid `grid_id` (every grid's runs when None), newest first: run id, path,
    grid id, cell index, cell count, the cell's values (as text), model, status, created."""
    rows = []
    listed = store.list_runs() if store.root.is_dir() else pd.DataFrame(columns=["run_id", "path"])
    for row in listed.itertuples():
        record = _grid_record(row.path)
        if record is None or (grid_id is not None and record.get("id") != grid_id):
            continue
        values = record.get("values") if isinstance(record.get("values"), dict) else {}
        rows.append({"run_id": row.run_id, "path": row.path, "grid": record.get("id"), "cell": record.get("cell"),
                     "n_cells": record.get("n_cells"), "values": " ".join(f"{k}={_show(v)}" for k, v in values.items()),
                     "model": row.model, "status": row.status, "created": row.created})
    return pd.DataFrame(rows, columns=GRID_RUN_COLUMNS)


def _grid_record(path: str | Path) -> dict[str, Any] | None:
    try:
        record = Run(path).read_manifest().get(GRID_KEY)
    except RunStoreError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def with_grid_column(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`runs` (a `RunStore.list_runs` frame) cut to `columns`, plus a `grid` column
    (`<grid id>#<cell>`, "-" for a run of no grid) when some run belongs to a grid."""
    grids = runs["path"].map(grid_label)
    if grids.notna().any():
        return runs.assign(grid=grids.fillna("-"))[[*columns, "grid"]]
    return runs[columns]


def grid_ids(store: RunStore) -> list[str]:
    """The grid ids found in the run store, the newest grid first."""
    return list(dict.fromkeys(grid_runs(store)["grid"]))


def require_grid(store: RunStore, grid_id: str) -> None:
    """A one-line `InterpError` when no run of the store belongs to grid `grid_id`."""
    ids = grid_ids(store)
    if grid_id not in ids:
        known = f"grids there: {', '.join(ids)}" if ids else "it holds no run of any grid"
        raise InterpError(f"no run of grid {grid_id!r} in {store.root}; {known} (`interp runs` shows them)")


def grid_label(path: str | Path) -> str | None:
    """`<grid id>#<cell>` of a run of a grid, else None (what `interp runs` shows)."""
    record = _grid_record(path)
    return None if record is None else f"{record['id']}#{record.get('cell')}"


def _unfinished_cells(store: RunStore, grid_id: str) -> dict[int, Run]:
    """Cell index -> the run to resume: the newest run of each cell when it is interrupted or failed."""
    newest: dict[int, Any] = {}
    for r in grid_runs(store, grid_id).itertuples():  # newest first
        if pd.notna(r.cell):
            newest.setdefault(int(r.cell), r)
    return {cell: Run(Path(r.path)) for cell, r in newest.items() if r.status in ("interrupted", "failed")}


def _complete_cells(store: RunStore, grid_id: str) -> dict[int, str]:
    """Cell index -> run id of the newest complete run of each cell of the grid."""
    done: dict[int, str] = {}
    for r in grid_runs(store, grid_id).itertuples():  # newest first
        if r.status == "complete" and pd.notna(r.cell):
            done.setdefault(int(r.cell), r.run_id)
    return done
