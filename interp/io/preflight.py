"""Checks that run before any weights load (`interp validate`, and `interp run` before it loads
the model): the output location can take a run, and the kind's data files are valid for the
model's tokenizer (every broken line reported, each by its physical file line)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from interp.core.errors import ConfigError
from interp.io.limits import available_memory, check_memory, count_forwards, fmt_bytes
from interp.io.registry import get_kind

__all__ = ["check_output", "preflight"]


def check_output(runs_dir: str | Path) -> str:
    """A `ConfigError` naming `output.runs_dir` when no run directory can be made under it (a
    file, or a read-only directory); otherwise a line saying where runs go."""
    path = Path(runs_dir).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing == path and not path.is_dir():
        raise ConfigError(f"{path.resolve()} is a file, not a directory; give a directory for the runs",
                          path="output.runs_dir")
    if not existing.is_dir():
        raise ConfigError(f"{existing.resolve()} is a file, so {path} cannot be created; give a directory",
                          path="output.runs_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing.resolve()} is not writable; give a directory you can write to "
                          "(or --runs-dir)", path="output.runs_dir")
    return f"output: runs go to {path.resolve()}" + ("" if path.exists() else " (created on the first run)")


def _limits_line(cfg: Any, forwards: int, peak: int) -> str:
    avail, where = available_memory(str(cfg.model.device))
    work = f"at least {forwards:.2e} forward passes" if forwards else "no work estimate for this kind"
    mem = (f"peak memory at least {fmt_bytes(peak)} ({fmt_bytes(avail)} {where})" if peak
           else f"peak memory unknown before {cfg.model.name} loads")
    return f"limits: {work}; {mem} (before the data is built; checked again after it is)"


def preflight(cfg: Any, tokenizer: Any = None, *, runs_dir: str | Path | None = None,
              force: bool = False) -> list[str]:
    """Every check that needs no weights; returns the lines to print, raises on a problem.
    `tokenizer` None: load the model's tokenizer only (`interp.models.tokenizers`). The work
    limit is checked first on a lower bound from the config alone, so a huge prompt count is
    refused before any prompt is generated (`force` skips it)."""
    lines = [check_output(runs_dir or cfg.output.runs_dir)]
    kind = get_kind(cfg.kind)
    lines.append(_limits_line(cfg, count_forwards(kind, cfg, None, None, force=force),
                              check_memory(kind, cfg, None, None, force=force)))
    if kind.check is None:
        return lines
    if tokenizer is None:
        from interp.models.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.name)
    return lines + kind.check(cfg, tokenizer)
