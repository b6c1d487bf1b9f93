"""The execution seam: analyses split a sweep into `Shard`s and hand them to an `Executor`
without knowing where they run (in this process, or on Ray actors: `interp.io.execution`).

A shard is a stable string key, a picklable top-level task `fn(model, payload) -> result` and
its payload. An executor runs shards on *its* model (the in-process one, or each worker's own
copy) and returns their results in shard order, whatever order they finished in; `on_result`
is told about each one as it finishes (the run store writes it to disk there).

    shards = [Shard("b0-L0", sweep_layer, (pb, 0)), Shard("b0-L1", sweep_layer, (pb, 1))]
    results = run_shards(LocalExecutor(model), shards, progress)   # [r0, r1], shard order
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from interp.core.errors import InterpError

__all__ = ["Shard", "Executor", "LocalExecutor", "OnResult", "run_shards", "check_shards"]

OnResult = Callable[[int, Any], None]  # (index of the shard in the list given, its result)


@dataclass(frozen=True)
class Shard:
    """One unit of work: `fn(model, payload)`. `fn` must be a module-level function (so that
    it pickles by reference) and `key` unique within one `run_shards` call and stable across
    runs of the same config (a resumed run finds a finished shard by it)."""

    key: str
    fn: Callable[[Any, Any], Any]
    payload: Any


class Executor(Protocol):
    """Runs shards on a model; returns their results in the order of `shards`."""

    def map(self, shards: Sequence[Shard], on_result: OnResult | None = None) -> list[Any]: ...


class LocalExecutor:
    """Runs each shard in turn on the in-process `model` (the reference every other executor
    must equal)."""

    def __init__(self, model: Any):
        self.model = model

    def map(self, shards: Sequence[Shard], on_result: OnResult | None = None) -> list[Any]:
        out = []
        for i, shard in enumerate(shards):
            result = shard.fn(self.model, shard.payload)
            if on_result is not None:
                on_result(i, result)
            out.append(result)
        return out


def check_shards(shards: Sequence[Shard]) -> None:
    """Shard keys must be unique: a resumed run finds a finished shard by its key."""
    seen: set[str] = set()
    for s in shards:
        if s.key in seen:
            raise InterpError(f"shard key {s.key!r} is used twice; shard keys must be unique")
        seen.add(s.key)


def run_shards(executor: Executor, shards: Sequence[Shard],
               progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """`executor.map(shards)`, with `progress(shards done, shards)` after each finished shard."""
    check_shards(shards)
    done = [0]

    def on_result(_i: int, _r: Any) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(shards))

    if progress is not None:
        progress(0, len(shards))
    return executor.map(shards, on_result)
