"""Experiment config: a YAML file -> a frozen, validated `ExperimentConfig`.

Every problem is reported as a `ConfigError` that names the YAML path of the bad field
(`analyses.residual_patching.components[1]`) and says what is allowed, so a typo in a config
fails at load time with a readable message rather than deep inside an analysis. The schema is
plain pydantic models (`extra="forbid"`, `frozen=True`); this module only translates pydantic's
errors into that form and never executes anything from the file.

    >>> cfg = parse_config({"name": "ioi", "data": {"n_prompts": 8}})
    >>> cfg.data.n_prompts, cfg.analyses.head_patching.metric
    (8, 'logit_diff')
    >>> with_overrides(cfg, {"data.n_prompts": "4"}).data.n_prompts
    4
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from interp.core.errors import ConfigError, ModelLoadError
from interp.models.registry import check_model_name

__all__ = [
    "ExperimentConfig",
    "ModelConfig",
    "DataConfig",
    "AnalysesConfig",
    "AccuracyConfig",
    "HeadPatchingConfig",
    "ResidualPatchingConfig",
    "DlaConfig",
    "OutputConfig",
    "load_config",
    "parse_config",
    "with_overrides",
    "parse_set_args",
    "allowed_metrics",
    "resolve_chat",
    "resolve_prepend_bos",
    "resolve_for_model",
]

Component = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
Direction = Literal["denoising", "noising"]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
_FALLBACK_METRICS = ("logit_diff", "prob")
# `data.chat` of the kinds that can wrap prompts in the model's chat template (mcq_letters,
# retrieval_heads, knowledge_conflicts); unset = follow the model, see `resolve_chat`.
ChatSetting = Annotated[StrictBool | None, Field(
    description="true or false (prompts in the model's chat template, for instruct models), or "
    "null/unset to follow the model (true when its tokenizer has a chat template)")]


def allowed_metrics() -> list[str]:
    """Metric names a config may use: the keys of `interp.core.metrics.METRICS`."""
    try:  # imported lazily: the metric registry sits in another layer and may be absent
        from interp.core.metrics import METRICS
    except ImportError:
        return list(_FALLBACK_METRICS)
    return sorted(METRICS)


class _FieldError(ValueError):
    """A cross-field check failed; `field` is the sub-key of the model it belongs to."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _known_metric(metric: str) -> str:
    allowed = allowed_metrics()
    if metric not in allowed:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(allowed)}")
    return metric


# A metric name from the registry (interp.core.metrics), checked when the config is loaded.
MetricName = Annotated[StrictStr, AfterValidator(_known_metric)]


def resolve_config_path(path: Path | None, info: ValidationInfo, *, must: str | None, what: str) -> Path | None:
    """`path` resolved against the config file's folder (validation context `base_dir`, else the
    current directory). `must` = "file" | "dir" | "exist" raises a ValueError naming `what`
    when the resolved path is not one; None accepts any path."""
    if path is None:
        return None
    base = Path((info.context or {}).get("base_dir") or Path.cwd())
    resolved = (base / path.expanduser()).resolve()
    ok = {"file": resolved.is_file, "dir": resolved.is_dir, "exist": resolved.exists, None: lambda: True}[must]()
    if not ok:
        problem = "is a directory" if must == "file" and resolved.is_dir() else (
            "is not a directory" if must == "dir" and resolved.exists() else "does not exist")
        raise ValueError(f"{what} {resolved} {problem} (relative paths are resolved against {base})")
    return resolved


def unique_items(values: tuple, what: str) -> tuple:
    """`values` unchanged, or a ValueError naming the repeated entries."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} listed more than once: {', '.join(repeated)}")
    return values


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat(chat: bool | None, model: Any) -> bool:
    """`data.chat` of the mcq, retrieval and knowledge kinds for a loaded `model`: unset (None)
    follows the model (true when its tokenizer has a chat template); true on a model without
    one is a one-line `ConfigError` instead of a transformers error deep in the run."""
    has = has_chat_template(model.tokenizer)
    if chat is None:
        return has
    if chat and not has:
        raise ConfigError(f"model {model.name} has no chat template; set data.chat: false "
                          "(or leave data.chat unset to follow the model)", path="data.chat")
    return chat


def resolve_prepend_bos(prepend_bos: bool | None, model: Any) -> bool:
    """`data.prepend_bos` for a loaded `model`: unset (None) follows the model's `prepend_bos`
    (a per-model fact, `interp.models.registry.MODEL_FACTS`); true or false is kept."""
    return bool(model.prepend_bos) if prepend_bos is None else prepend_bos


_MODEL_DEFAULTS = {"chat": resolve_chat, "prepend_bos": resolve_prepend_bos}


def resolve_for_model(cfg: Any, model: Any) -> Any:
    """`cfg` with every model-dependent default of its `data` section (`chat`,
    `prepend_bos`, where the kind has them) resolved against the loaded `model`; the runner
    calls it right after loading the model, before any data is built, so the kinds and the
    run manifest see plain true/false. Raises `ConfigError` where a setting cannot work."""
    data = getattr(cfg, "data", None)
    update = {key: fn(getattr(data, key), model) for key, fn in _MODEL_DEFAULTS.items()
              if data is not None and key in type(data).model_fields}
    if not update:
        return cfg
    return cfg.model_copy(update={"data": data.model_copy(update=update)})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    name: StrictStr = Field(
        "smollm2-135m", description="a bundled/tiny model name, a hub id or a local directory"
    )
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        try:
            check_model_name(name)
        except ModelLoadError as exc:
            raise ValueError(str(exc)) from None
        return name


class DataConfig(_Section):
    source: Literal["ioi", "jsonl"] = "ioi"
    n_prompts: PositiveInt = Field(20, description="an integer >= 1 (ioi only)")
    corruption: Literal["abc", "flip"] = "abc"
    templates: tuple[NonNegativeInt, ...] | None = Field(
        None, description="null (all templates) or a list of template indices >= 0 (ioi only)"
    )
    path: Path | None = Field(None, description="a path to a .jsonl prompt file (jsonl only)")
    position_template: NonNegativeInt = Field(
        0,
        description="a template index >= 0 (ioi only): maps resolved by position (residual "
        "patching, per-position head patching) use prompts of this one template so that "
        "positions line up",
    )
    position_n_prompts: PositiveInt = Field(
        8, description="an integer >= 1 (ioi only): prompts in the position-resolved maps"
    )
    prepend_bos: StrictBool | None = Field(
        None, description="true or false, or null/unset to follow the model (true for gemma3-270m, "
        "which expects <bos> first; false for smollm2-135m)")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        must = "file" if info.data.get("source") == "jsonl" else None
        return resolve_config_path(path, info, must=must, what="data file")

    @field_validator("templates")
    @classmethod
    def _non_empty(cls, templates: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if templates is not None and not templates:
            raise ValueError("empty list; give at least one template index, or null for all")
        return templates

    @model_validator(mode="after")
    def _fields_match_source(self) -> DataConfig:
        if self.source == "jsonl" and self.path is None:
            raise _FieldError("path", "required when data.source is 'jsonl'")
        # A field that the chosen source ignores must stay at its default: silently ignoring
        # `n_prompts: 8` on a jsonl source would hide a mistake.
        only_for = {"ioi": ("path",), "jsonl": ("n_prompts", "corruption", "templates", "position_template", "position_n_prompts")}
        for name in only_for[self.source]:
            default = type(self).model_fields[name].default
            if getattr(self, name) != default:
                other = "jsonl" if self.source == "ioi" else "ioi"
                raise _FieldError(
                    name,
                    f"only used when data.source is '{other}' (data.source is "
                    f"'{self.source}'); remove it or set it to {_yaml_scalar(default)}",
                )
        return self


class _AnalysisConfig(_Section):
    enabled: StrictBool = True


class AccuracyConfig(_AnalysisConfig):
    pass


class DlaConfig(_AnalysisConfig):
    pass


class HeadPatternsConfig(_AnalysisConfig):
    """Previous-token, duplicate-token and induction scores on repeated random tokens (cheap:
    one forward of n_sequences x 2*seq_len tokens); written as `head_scores` for the atlas."""

    enabled: StrictBool = False
    n_sequences: PositiveInt = Field(8, description="an integer >= 1 (random sequences)")
    seq_len: Annotated[StrictInt, Field(ge=2)] = Field(20, description="an integer >= 2 (tokens per half)")


class _PatchingConfig(_AnalysisConfig):
    direction: Direction = "denoising"
    metric: MetricName = "logit_diff"
    batch_size: PositiveInt = Field(
        64, description="an integer >= 1 (max patch variants per forward)"
    )


class HeadPatchingConfig(_PatchingConfig):
    per_position: StrictBool = False


class ResidualPatchingConfig(_PatchingConfig):
    components: tuple[Component, ...] = Field(
        ("resid_pre", "attn_out", "mlp_out"),
        min_length=1,
        description="a non-empty list of: resid_pre, resid_mid, resid_post, attn_out, mlp_out",
    )

    @field_validator("components")
    @classmethod
    def _no_duplicates(cls, components: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({c for c in components if components.count(c) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return components


class AnalysesConfig(_Section):
    accuracy: AccuracyConfig = AccuracyConfig()
    head_patching: HeadPatchingConfig = HeadPatchingConfig()
    residual_patching: ResidualPatchingConfig = ResidualPatchingConfig()
    dla: DlaConfig = DlaConfig()
    head_patterns: HeadPatternsConfig = HeadPatternsConfig()


class OutputConfig(_Section):
    runs_dir: Path = Field(Path("runs"), description="a directory path")
    top_k: PositiveInt = Field(10, description="an integer >= 1")


class ExperimentConfig(_Section):
    """The patching experiment (IOI or a user's prompt pairs). Other experiment kinds (speech,
    circuits, head scores, ...) register their own top-level model in `EXPERIMENT_KINDS`; each
    has `kind`, `name`, `description`, `seed`, `model` and `output` like this one."""

    kind: Literal["patching"] = "patching"
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        description="a name of letters, digits, '_' and '-' (used in the run directory name)"
    )
    description: StrictStr = ""
    seed: NonNegativeInt = Field(0, description="an integer >= 0")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    analyses: AnalysesConfig = AnalysesConfig()
    output: OutputConfig = OutputConfig()

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (lists, strings, numbers) that `parse_config` accepts back."""
        return self.model_dump(mode="json")


# kind -> top-level config model; a YAML picks one with `kind:` (default "patching").
EXPERIMENT_KINDS: dict[str, type[BaseModel]] = {"patching": ExperimentConfig}


def register_experiment_kind(kind: str, model: type[BaseModel]) -> None:
    EXPERIMENT_KINDS[kind] = model


# --- loading -------------------------------------------------------------------------------


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


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config; relative `data.path` is resolved against it."""
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
    return parse_config(data, file=str(path))


def parse_config(
    data: Any, file: str | None = None, *, base_dir: str | Path | None = None
) -> ExperimentConfig:
    """Validate a dict (e.g. parsed YAML). Relative paths resolve against `base_dir`, else the
    directory of `file`, else the current directory."""
    if base_dir is None and file is not None:
        base_dir = Path(file).resolve().parent
    if data is None:
        raise ConfigError(f"the config is empty; {_allowed_keys(ExperimentConfig)}", file=file)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the config must be a mapping of keys to values, got {_kind(data)}; "
            f"{_allowed_keys(ExperimentConfig)}",
            file=file,
        )
    kind = data.get("kind", "patching")
    _load_kinds()
    if kind not in EXPERIMENT_KINDS:
        raise ConfigError(
            f"unknown experiment kind {_show(kind)}; allowed: {', '.join(EXPERIMENT_KINDS)}",
            path="kind", file=file,
        )
    root = EXPERIMENT_KINDS[kind]
    try:
        return root.model_validate(dict(data), context={"base_dir": base_dir})  # type: ignore[return-value]
    except ValidationError as exc:
        raise _to_config_error(exc, file, root) from None


def _load_kinds() -> None:
    """Import the modules that register further experiment kinds (kept lazy: they may pull in
    heavier dependencies)."""
    import importlib

    for module in _KIND_MODULES:
        importlib.import_module(module)  # a broken kind module must fail loudly, not vanish


# Modules that call `register_experiment_kind` when imported.
_KIND_MODULES: list[str] = [
    "interp.io.kinds.circuits",
    "interp.io.kinds.speech",
    "interp.io.kinds.mcq",
    "interp.io.kinds.vision",
    "interp.io.kinds.retrieval",
    "interp.io.kinds.knowledge",
]


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def with_overrides(
    cfg: ExperimentConfig, overrides: Mapping[str, Any], *, base_dir: str | Path | None = None
) -> ExperimentConfig:
    """A copy of `cfg` with dotted keys replaced, re-validated.

    String values are parsed as YAML scalars (`"8"` -> 8, `"[resid_pre]"` -> a list); a relative
    `data.path` resolves against `base_dir` (default: the current directory).
    """
    data = cfg.to_dict()
    for key, raw in overrides.items():
        if not isinstance(key, str) or not _DOTTED.match(key):
            raise ConfigError(
                f"invalid override key {key!r}: use a dotted path like 'data.n_prompts'", path=key
            )
        value = _parse_scalar(raw) if isinstance(raw, str) else raw
        node, parts = data, key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})  # an unknown section is reported by validation
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"{where} is a single value, not a section", path=key)
            node = child
        node[parts[-1]] = value
    return parse_config(data, base_dir=base_dir)


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


# --- pydantic errors -> ConfigError ---------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a file path (a string)",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _to_config_error(exc: ValidationError, file: str | None, root: type[BaseModel]) -> ConfigError:
    problems = [_describe(err, root) for err in exc.errors()]
    if len(problems) == 1:
        path, message = problems[0]
        error = ConfigError(message, path=path or None, file=file)
    else:
        lines = "\n".join(f"  {p or '(top level)'}: {m}" for p, m in problems)
        error = ConfigError(f"{len(problems)} problems in the config:\n{lines}", file=file)
        error.path = problems[0][0] or None
    error.problems = problems  # type: ignore[attr-defined]
    return error


def _describe(err: Any, root: type[BaseModel]) -> tuple[str, str]:
    """One pydantic error -> (YAML path, message saying what is allowed)."""
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return _format_loc((*loc, cause.field)), str(cause)
    if isinstance(cause, Exception):  # our own validators already wrote a full message
        return _format_loc(loc), str(cause)
    return _format_loc(loc), _message(err, loc, root)


def _message(err: Any, loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    hint = _field_description(loc, root)
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1], root)
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {loc[-1]!r}{guess}; allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing" + (f"; expected {hint}" if hint else "")
    if kind == "literal_error":
        return f"invalid value {_show(value)}; allowed: {ctx.get('expected')}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        model = _model_at(loc, root)
        keys = f" with keys: {', '.join(model.model_fields)}" if model else ""
        return f"expected a mapping{keys}; got {_kind(value)}"
    if kind in _EXPECTED:
        return f"expected {hint or _EXPECTED[kind]}; got {_kind(value)} {_show(value)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}; got {_show(value)}"
    if kind == "too_short":
        return "must not be empty" + (f"; expected {hint}" if hint else "")
    if kind == "string_pattern_mismatch":
        return f"invalid value {_show(value)}; expected {hint or ctx.get('pattern')}"
    return f"{err['msg']}; got {_show(value)}"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class found by walking `loc` down from the config's root model."""
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field_description(loc: tuple[Any, ...], root: type[BaseModel]) -> str | None:
    parent = _model_at(loc[:-1], root) if loc else None
    field = parent.model_fields.get(loc[-1]) if parent and isinstance(loc[-1], str) else None
    return field.description if field else None


def _allowed_keys(model: type[BaseModel]) -> str:
    return f"allowed top-level keys: {', '.join(model.model_fields)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for types, name in (
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        ((list, tuple), "a list"),
        (Mapping, "a mapping"),
    ):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _yaml_scalar(value: Any) -> str:
    return "null" if value is None else repr(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
