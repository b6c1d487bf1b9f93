"""Progress of the data generators: each takes an optional `progress(done, total)` callback
(the runner's bar) and calls it at the start with 0, then about every 1% of the items and at
the end, so a long generation shows a bar from its first moment at almost no cost.

    tick = ticker(progress, n)
    for i in range(n):
        ...
        tick(i + 1)
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "ticker"]

Progress = Callable[[int, int], None]


def ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """A `tick(done)` that reports to `progress` (None: does nothing); reports 0 now."""
    if progress is None:
        return lambda done: None
    step = max(1, -(-total // 100))
    progress(0, total)

    def tick(done: int) -> None:
        if done % step == 0 or done == total:
            progress(done, total)

    return tick
