"""What an experiment step is: a function of a `StepContext` that returns a `StepResult` (tables,
figures, text files, summary lines, report sections, manifest updates) and writes nothing
itself. Only the runner writes, shows progress bars (a step asks `ctx.progress(desc)` for a
callback) and records the step in the manifest's `analyses_done`.

    def my_step(ctx: StepContext) -> StepResult:
        df = some_analysis(ctx.model, ctx.data, progress=ctx.progress("my analysis"))
        return StepResult("my_analysis", tables={"my_analysis": df}, summary=["..."])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from interp.io.report import ReportSection

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["StepResult", "StepContext", "Step", "Progress", "flat_frame"]

Progress = Callable[[int, int], None]


@dataclass
class StepResult:
    """What one step produced. `done`: the analysis name recorded in `analyses_done` once its
    tables are written (None: nothing recorded). `lead`: its summary lines and report sections
    go before those of the earlier steps. `manifest`: keys merged into the run manifest."""

    done: str | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    lead: bool = False


@dataclass
class StepContext:
    """What every step of a run sees: the config, the model, the prepared data, a `state` dict
    for what one step hands to a later one, a log function and `progress(desc)` (a callback
    `(done, total)` whose bar the runner owns and closes after the step). `executor(step)` is
    where the step's sweeps run as shards (stored in the run for `--resume`), or None outside a
    runner (the analyses then take their unsharded path)."""

    cfg: Any
    model: Any
    data: Any
    log: Callable[[str], None]
    progress: Callable[[str], Progress]
    state: dict[str, Any] = field(default_factory=dict)
    executors: Callable[[str], Any] | None = None

    def executor(self, step: str) -> Any:
        """The executor for step `step`'s shards (`interp.core.execution.Executor`), or None."""
        return self.executors(step) if self.executors is not None else None


Step = Callable[[StepContext], "StepResult | None"]


def flat_frame(df: pd.DataFrame, encode: Callable[[Any], str] = str) -> pd.DataFrame:
    """`df` with every dict/list/tuple cell encoded as text (parquet-safe)."""
    return df.map(lambda v: encode(v) if isinstance(v, dict | list | tuple) else v)
