"""Honest run states: a supervised run is marked `interrupted` when SIGINT or SIGTERM stops it,
and leaves enough behind (pid, host, a heartbeat file) for a killed one to be recognised.

    with supervised(run):           # run: a Run whose manifest is written (status "running")
        execute(...)                # tables written so far stay; SIGTERM -> RunInterrupted(143)

Inside the block, SIGINT and SIGTERM raise `RunInterrupted` (a BaseException, like
KeyboardInterrupt, so `except Exception` in analysis code does not swallow it) carrying the
exit code the process should end with (130 / 143); on the way out the run is marked
`interrupted`, whatever an inner handler marked it. The previous signal handlers are restored
on exit. A heartbeat thread rewrites `<run>/heartbeat` every `interval` seconds (atomically; it
never touches manifest.json), so `effective_status` can tell a run that was SIGKILLed (pid gone,
or heartbeat older than a minute) from a live one.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType

from interp.io.runfiles import RunStoreError
from interp.io.runfiles import atomic_write as _atomic_write
from interp.io.runstate import HEARTBEAT
from interp.io.runstore import Run

__all__ = ["RunInterrupted", "supervised", "EXIT_CODES", "HEARTBEAT_INTERVAL_S"]

HEARTBEAT_INTERVAL_S = 10.0
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during a supervised run; `exit_code` is 128 + the signal."""

    def __init__(self, signum: int, run_id: str | None = None):
        self.signum = int(signum)
        self.exit_code = EXIT_CODES.get(signum, 128 + int(signum))
        self.run_id = run_id
        name = signal.Signals(signum).name
        where = f" (run {run_id} marked interrupted; finished tables kept)" if run_id else ""
        super().__init__(f"interrupted by {name}{where}")


def _beat(run: Run) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    _atomic_write(run.path / HEARTBEAT, f"{stamp} pid {os.getpid()}\n".encode())


class _Heartbeat(threading.Thread):
    def __init__(self, run: Run, interval: float):
        super().__init__(name=f"heartbeat-{run.run_id}", daemon=True)
        self.run_, self.interval, self.stopped = run, interval, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                _beat(self.run_)
            except RunStoreError:
                pass  # a full disk must not kill the run from a side thread; the next beat retries


@contextmanager
def supervised(run: Run, *, interval: float = HEARTBEAT_INTERVAL_S) -> Iterator[Run]:
    """Run the block with SIGINT/SIGTERM handlers, pid/host in the manifest and a heartbeat.

    Signal handlers can only be installed from the main thread; elsewhere the block runs with
    the heartbeat and pid only (the signals keep their old behaviour)."""
    run.update_manifest(pid=os.getpid(), hostname=socket.gethostname())
    _beat(run)
    heart = _Heartbeat(run, interval)
    heart.start()
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:  # already stopping: a second Ctrl-C must not break the cleanup
            return
        fired.append(signum)
        raise RunInterrupted(signum, run.run_id)

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, handler) for s in EXIT_CODES} if main else {}
    try:
        yield run
    except RunInterrupted as exc:
        fired.append(exc.signum)
        try:
            run.mark("interrupted", error=f"interrupted by {signal.Signals(exc.signum).name}")
        except RunStoreError:
            pass  # e.g. a full disk: the pid and heartbeat still show the run as gone
        raise
    finally:
        fired.append(0)  # a signal from here on is ignored until the old handler is back
        for s, h in old.items():
            signal.signal(s, h)
        heart.stopped.set()
        heart.join(timeout=5)
