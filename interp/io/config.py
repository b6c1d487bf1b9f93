"""Experiment config: a YAML file -> a frozen, validated config of its experiment kind.

Every problem is reported as a `ConfigError` that names the YAML path of the bad field
(`analyses.residual_patching.components[1]`) and says what is allowed, so a typo in a config
fails at load time with a readable message rather than deep inside an analysis. `kind:` picks
the config class from the kind registry (`interp.io.registry`; default "patching"); each kind's
schema is plain pydantic models (`extra="forbid"`, `frozen=True`) in its own module under
`interp/io/kinds/`. This module only reads YAML, applies overrides and translates pydantic's
errors; it never executes anything from the file.

    >>> cfg = parse_config({"name": "ioi", "data": {"n_prompts": 8}})
    >>> cfg.data.n_prompts, cfg.analyses.head_patching.metric
    (8, 'logit_diff')
    >>> with_overrides(cfg, {"data.n_prompts": "4"}).data.n_prompts
    4
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from interp.core.errors import ConfigError
from interp.io.config_errors import allowed_keys, describe_kind, to_config_error
from interp.io.kinds.patching import (
    AccuracyConfig,
    AnalysesConfig,
    DataConfig,
    DlaConfig,
    ExperimentConfig,
    HeadPatchingConfig,
    ResidualPatchingConfig,
)
from interp.io.registry import DEFAULT_KIND, get_kind
from interp.io.schema import (
    BaseExperimentConfig,
    ChatSetting,
    MetricName,
    ModelConfig,
    NonNegativeInt,
    OutputConfig,
    PositiveInt,
    allowed_metrics,
    resolve_chat,
    resolve_config_path,
    resolve_for_model,
    resolve_prepend_bos,
    unique_items,
)

__all__ = [
    "BaseExperimentConfig",
    "ExperimentConfig",
    "ModelConfig",
    "DataConfig",
    "AnalysesConfig",
    "AccuracyConfig",
    "HeadPatchingConfig",
    "ResidualPatchingConfig",
    "DlaConfig",
    "OutputConfig",
    "ChatSetting",
    "MetricName",
    "NonNegativeInt",
    "PositiveInt",
    "load_config",
    "read_yaml",
    "is_grid",
    "set_dotted",
    "GRID_KEY",
    "parse_config",
    "with_overrides",
    "parse_set_args",
    "allowed_metrics",
    "resolve_chat",
    "resolve_config_path",
    "resolve_prepend_bos",
    "resolve_for_model",
    "unique_items",
]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


GRID_KEY = "grid"  # a top-level `grid:` makes the YAML a study of several runs (`interp.io.grid`)


def is_grid(data: Any) -> bool:
    """Whether parsed YAML is a grid (has a top-level `grid:` mapping of config paths to lists)."""
    return isinstance(data, Mapping) and GRID_KEY in data


def load_config(path: str | Path) -> BaseExperimentConfig:
    """Read and validate a YAML experiment config; relative `data.path` is resolved against it.
    A grid YAML is refused here (it is several configs: `interp.io.grid.load_grid`)."""
    data = read_yaml(path)
    if is_grid(data):
        raise ConfigError("this YAML is a grid of runs; load it with interp.io.grid.load_grid "
                          "(`interp run` and `interp validate` take it as it is)", path=GRID_KEY, file=str(path))
    return parse_config(data, file=str(path))


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of a config file (duplicate keys refused), or a one-line `ConfigError`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path.resolve()}", file=str(path))
    if not path.is_file():
        raise ConfigError(f"{path.resolve()} is not a file; expected a YAML config", file=str(path))
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc), file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config: {exc}", file=str(path)) from None
    return data


def parse_config(
    data: Any, file: str | None = None, *, base_dir: str | Path | None = None
) -> BaseExperimentConfig:
    """Validate a dict (e.g. parsed YAML). Relative paths resolve against `base_dir`, else the
    directory of `file`, else the current directory."""
    if base_dir is None and file is not None:
        base_dir = Path(file).resolve().parent
    if data is None:
        raise ConfigError(f"the config is empty; {allowed_keys(ExperimentConfig)}", file=file)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the config must be a mapping of keys to values, got {describe_kind(data)}; "
            f"{allowed_keys(ExperimentConfig)}",
            file=file,
        )
    root = get_kind(data.get("kind", DEFAULT_KIND), file=file).config
    try:
        return root.model_validate(dict(data), context={"base_dir": base_dir})  # type: ignore[return-value]
    except ValidationError as exc:
        raise to_config_error(exc, file, root) from None


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def with_overrides(
    cfg: BaseExperimentConfig, overrides: Mapping[str, Any], *, base_dir: str | Path | None = None
) -> BaseExperimentConfig:
    """A copy of `cfg` with dotted keys replaced, re-validated.

    String values are parsed as YAML scalars (`"8"` -> 8, `"[resid_pre]"` -> a list); a relative
    `data.path` resolves against `base_dir` (default: the current directory).
    """
    data = cfg.to_dict()
    for key, raw in overrides.items():
        set_dotted(data, key, _parse_scalar(raw) if isinstance(raw, str) else raw)
    return parse_config(data, base_dir=base_dir)


def set_dotted(data: dict, key: Any, value: Any) -> None:
    """`data[a][b] = value` for the dotted `key` "a.b" (sections made as needed; an unknown
    section is reported by validation); a key that is not a dotted path, or that runs through
    a single value, is a `ConfigError` naming it."""
    if not isinstance(key, str) or not _DOTTED.match(key):
        raise ConfigError(f"invalid override key {key!r}: use a dotted path like 'data.n_prompts'", path=str(key))
    node, parts = data, key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{where} is a single value, not a section", path=key)
        node = child
    node[parts[-1]] = value


def parse_set_args(items: list[str]) -> dict[str, str]:
    """`["data.n_prompts=8", ...]` (the CLI's `--set`) -> `{"data.n_prompts": "8", ...}`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --set {item!r}: use KEY=VALUE, e.g. data.n_prompts=8")
        out[key.strip()] = value.strip()
    return out


def _parse_scalar(raw: str) -> Any:
    """`"8"` -> 8, `"true"` -> True, `"[a, b]"` -> a list; text YAML would read as a mapping
    (`"a: b"`) or cannot parse stays the string it is, so free text needs no quoting."""
    try:
        value = yaml.load(raw, Loader=_StrictLoader)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        return raw
    return value


