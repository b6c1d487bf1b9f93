"""Writing run files safely: atomic writes that respect the umask, one-line errors for
file-system problems the user can fix, a per-manifest lock, and the shared plotly script that
figure pages load (`plotly_loader`)."""

from __future__ import annotations

import base64
import errno
import functools
import gzip
import os
import secrets
import threading
from pathlib import Path

from interp.core.errors import InterpError

__all__ = ["PLOTLY_JS", "RunStoreError", "RunStoreWriteError", "atomic_write", "make_dir",
           "manifest_lock", "os_problem", "plotly_loader"]

PLOTLY_JS = "plotly.gz.js"
_MANIFEST_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class RunStoreError(InterpError):
    """A run directory or one of its files is missing or unreadable."""


class RunStoreWriteError(RunStoreError, OSError):
    """A run file could not be written (read-only or full disk, no permission, not a directory)."""


def os_problem(exc: OSError, action: str, path: Path) -> RunStoreWriteError:
    """One line for a file-system error the user can fix: what failed, where, and why."""
    why = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: " (the disk is full: free space or use another --runs-dir)",
        errno.EROFS: " (read-only file system: use another --runs-dir)",
        errno.EACCES: " (no permission: use another --runs-dir)",
        errno.EEXIST: " (a file is in the way: --runs-dir must name a directory)",
        errno.ENOTDIR: " (a file is in the way: --runs-dir must name a directory)",
    }.get(exc.errno, "")
    return RunStoreWriteError(f"cannot {action} {path}: {why}{hint}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half.

    The file is created with mode 0666 minus the umask (like `open`), not mkstemp's 0600, so
    a shared run store stays readable. OS errors become one-line `RunStoreWriteError`s."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise os_problem(exc, "write", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_problem(exc, "write", path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_dir(path: Path, *, exist_ok: bool = True) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok:
            raise
        raise os_problem(FileExistsError(errno.EEXIST, "File exists"), "create directory", path) from None
    except OSError as exc:
        raise os_problem(exc, "create directory", path) from None


def manifest_lock(path: Path) -> threading.RLock:
    """One lock per manifest file in this process: read-modify-writes never interleave."""
    key = path.resolve()
    with _LOCKS_GUARD:
        return _MANIFEST_LOCKS.setdefault(key, threading.RLock())


# plotly.js is 4.8 MB; report.html inlines it once (self-contained), so the figure files share
# a gzip copy (1.9 MB as base64) that the browser unpacks (DecompressionStream: Chrome 80,
# Firefox 113, Safari 16.4). Until it is unpacked, `Plotly.newPlot` calls are queued.
_LOADER = ("/* plotly.js (of the plotly %(version)s Python package), gzip + base64; "
           "unpacked in the browser, then run. */\n"
           """(function () {
  var queue = [];
  window.Plotly = {newPlot: function () {
    var args = arguments;
    return new Promise(function (resolve) { queue.push([args, resolve]); });
  }};
  var packed = "%(data)s";
  var bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (source) {
    delete window.Plotly;
    (0, eval)(source);
    queue.forEach(function (q) { q[1](window.Plotly.newPlot.apply(window.Plotly, q[0])); });
  });
})();
""")


@functools.cache
def plotly_loader() -> bytes:
    """The shared figure script: plotly.js compressed, with a loader that unpacks it."""
    import plotly
    from plotly.offline import get_plotlyjs

    packed = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    text = _LOADER % {"version": plotly.__version__, "data": base64.b64encode(packed).decode("ascii")}
    return text.encode("utf-8")
