"""Where interp keeps what it builds once (converted weights, synthesised audio): one root,
`$INTERP_CACHE`, else `$XDG_CACHE_HOME/interp`, else `~/.cache/interp`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("INTERP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "interp"
    )
    return Path(root)
