"""Refuse a run whose estimated work is out of reach before it starts (issue 14): a kind's
`estimate` counts the forward passes each costly config field asks for; more than
`MAX_FORWARDS` in all is a `ConfigError` naming the field to lower, unless forced (`interp run
--force`)."""

from __future__ import annotations

from typing import Any

from interp.core.errors import ConfigError
from interp.io.registry import Kind

__all__ = ["MAX_FORWARDS", "check_work"]

MAX_FORWARDS = 10**7


def check_work(kind: Kind, cfg: Any, model: Any, data: Any, *, force: bool = False) -> int:
    """The estimated forward passes of the run (0 when the kind has no estimate); raises when
    they exceed `MAX_FORWARDS` and `force` is false."""
    if kind.estimate is None:
        return 0
    costs = kind.estimate(cfg, model, data)
    total = sum(costs.values())
    if total > MAX_FORWARDS and not force:
        field, most = max(costs.items(), key=lambda kv: kv[1])
        raise ConfigError(f"the run needs about {total:.2e} forward passes (more than {MAX_FORWARDS:.0e}), "
                          f"{most:.2e} of them for this setting; lower it, disable the analysis, or run with "
                          "--force", path=field)
    return total
