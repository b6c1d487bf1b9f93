"""The one registry of experiment kinds: kind name -> config class, data preparation, steps and
an optional weight-free preflight check. Every module in `interp/io/kinds/` is imported by
`load_kinds()` and registers itself, so a new kind is one new module (plus its YAML): no list
to extend anywhere else.

    register_kind("my_kind", MyConfig, step_a, step_b, prepare=prepare, check=check)

`register_kind` raises on a second kind of the same name (re-importing the same module, as a
reload does, replaces its own entry).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interp.core.errors import ConfigError
from interp.io.schema import BaseExperimentConfig
from interp.io.step import Step

__all__ = ["Kind", "KINDS", "DEFAULT_KIND", "register_kind", "load_kinds", "get_kind", "kind_names"]

DEFAULT_KIND = "patching"  # a YAML without `kind:` is a patching experiment

Prepare = Callable[[Any, Any, Callable[[str], None]], Any]
Check = Callable[[Any, Any], list[str]]
# (cfg, model, prepared data) -> {config field: forward passes it asks for}
Estimate = Callable[[Any, Any, Any], dict[str, int]]
# (cfg, `interp.io.limits.ModelShape`, prepared data or None) -> {config field: bytes its largest
# activation block holds at once}
Memory = Callable[[Any, Any, Any], dict[str, int]]


@dataclass(frozen=True)
class Kind:
    """One experiment kind. `prepare(cfg, model, log)` builds the data before the run directory
    exists (bad data fails without leaving an empty run; a prepare that also takes a keyword
    `progress` gets the runner's `bars.new(desc)`, which opens a bar and returns its (done,
    total) callback, for its generators); `steps` run in order, each returning a `StepResult`
    that the runner writes; `check(cfg, tokenizer)` validates the data files with the tokenizer
    only (no weights) and returns lines to print, raising on a problem;
    `estimate(cfg, model, data)` says how many forward passes each costly field asks for (the
    runner refuses more than `interp.io.limits.MAX_FORWARDS` unless forced);
    `memory(cfg, shape, data)` says how many bytes of activations each costly field makes one
    analysis hold at once (`shape` an `interp.io.limits.ModelShape`; data None before it is
    prepared: a lower bound), added to the weights and compared with the available memory."""

    name: str
    config: type[BaseExperimentConfig]
    prepare: Prepare
    steps: tuple[Step, ...]
    check: Check | None = None
    estimate: Estimate | None = None
    memory: Memory | None = None


    def prepare_data(self, cfg: Any, model: Any, log: Callable[[str], None],
                     progress: Callable[[str], Callable[[int, int], None]] | None = None) -> Any:
        """`prepare`, handing it `progress` when it takes that keyword."""
        if progress is not None and "progress" in inspect.signature(self.prepare).parameters:
            return self.prepare(cfg, model, log, progress=progress)  # type: ignore[call-arg]
        return self.prepare(cfg, model, log)


KINDS: dict[str, Kind] = {}


def register_kind(kind: str, config: type[BaseExperimentConfig], *steps: Step, prepare: Prepare,
                  check: Check | None = None, estimate: Estimate | None = None,
                  memory: Memory | None = None) -> Kind:
    """Register experiment kind `kind`; raises ValueError if another module already did."""
    default = config.model_fields["kind"].default
    if default != kind:
        raise ValueError(f"{config.__qualname__}.kind defaults to {default!r}, not {kind!r}")
    existing = KINDS.get(kind)
    if existing is not None and _where(existing.config) != _where(config):
        raise ValueError(f"experiment kind {kind!r} is registered twice: by {_where(existing.config)} "
                         f"and by {_where(config)}")
    entry = Kind(kind, config, prepare, tuple(steps), check, estimate, memory)
    KINDS[kind] = entry
    return entry


def _where(config: type) -> str:
    return f"{config.__module__}.{config.__qualname__}"


def load_kinds() -> dict[str, Kind]:
    """Import every module of `interp.io.kinds` (each registers its kind); a broken kind module
    fails loudly rather than vanishing."""
    import interp.io.kinds as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return KINDS


def kind_names() -> list[str]:
    return list(load_kinds())


def get_kind(kind: object, file: str | None = None) -> Kind:
    """The registered kind, or a one-line `ConfigError` naming `kind` and the allowed kinds
    (also for a value that is not a string, e.g. a YAML list)."""
    kinds = load_kinds()
    if not isinstance(kind, str) or kind not in kinds:
        from interp.io.config_errors import show

        raise ConfigError(f"unknown experiment kind {show(kind)}; allowed: {', '.join(kinds)}",
                          path="kind", file=file)
    return kinds[kind]
