"""The shared pieces of every experiment config: one base config (kind, name, description,
seed, model, output), one `ModelConfig`, the `Section` base, field types and the helpers that
resolve model-dependent defaults. Every kind's config (`interp/io/kinds/*.py`) extends
`BaseExperimentConfig`; nothing here knows about any one kind.

    >>> class MyConfig(BaseExperimentConfig):
    ...     kind: Literal["my_kind"] = "my_kind"
    >>> MyConfig(name="x").model.name
    'smollm2-135m'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from interp.core.errors import ConfigError, ModelLoadError
from interp.core.metrics import metrics_reading
from interp.models.registry import describe_model_name

__all__ = [
    "Section", "FieldError", "ModelConfig", "OutputConfig", "ExecutionConfig", "BaseExperimentConfig", "Enabled",
    "PositiveInt", "NonNegativeInt", "MetricName", "ChatSetting", "allowed_metrics",
    "resolve_config_path", "unique_items", "non_empty", "Unique", "ConfigPath", "has_chat_template", "resolve_chat",
    "chat_setting", "BatchSizeSetting",
    "resolve_prepend_bos", "resolve_for_model",
]

PositiveInt = Annotated[StrictInt, Field(ge=1)]


def _batch_size(value: int | str) -> int | str:
    if value == "auto" or (isinstance(value, int) and value >= 1):
        return value
    raise ValueError(f"batch_size must be an integer >= 1 or 'auto' (from the free memory), got {value!r}")


# Patch variants per forward of the sweep-based analyses: an integer >= 1 or "auto".
BatchSizeSetting = Annotated[StrictInt | StrictStr, AfterValidator(_batch_size)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
# `data.chat` of the kinds that can wrap prompts in the model's chat template (mcq_letters,
# retrieval_heads, knowledge_conflicts); unset = follow the model, see `resolve_chat`.
ChatSetting = Annotated[StrictBool | None, Field(
    description="true or false (prompts in the model's chat template, for instruct models), or "
    "null/unset to follow the model (true when its tokenizer has a chat template)")]


def allowed_metrics() -> list[str]:
    """Metric names a config may use: the registered metrics (`interp.core.metrics`) that read
    only what every prompt pair has, the answer and the distractor (the configs' metrics all
    score prompt pairs; the letter and memory/context metrics are the analyses' own)."""
    return metrics_reading()


class FieldError(ValueError):
    """A cross-field check failed; `field` is the sub-key of the model it belongs to (the
    config error then names `<section>.<field>`)."""

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


def Unique(what: str | None = None) -> AfterValidator:
    """For `Annotated[tuple[...], Unique("ranks")]`: the list unchanged (or null), or an error
    naming the repeated entries (`what` defaults to the field's name)."""

    def check(values: tuple | None, info: ValidationInfo) -> tuple | None:
        return None if values is None else unique_items(values, what or str(info.field_name))

    return AfterValidator(check)


def ConfigPath(what: str, must: str | None = "file") -> AfterValidator:
    """For `Annotated[Path | None, ConfigPath("items file")]`: a relative path resolved against
    the config file's folder and checked to be an existing `must` ("file" or "dir")."""

    def check(path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_config_path(path, info, must=must, what=what)

    return AfterValidator(check)


def non_empty(value: tuple) -> tuple:
    """`value` unchanged, or a ValueError (a validator, not min_length: pydantic adds a
    misleading "too short" after a bad item)."""
    if not value:
        raise ValueError("must not be empty; give at least one value")
    return value


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat(chat: bool | None, model: Any) -> bool:
    """`data.chat` of the mcq, retrieval and knowledge kinds for a loaded `model`: unset (None)
    follows the model (true when its tokenizer has a chat template); true on a model without
    one is a one-line `ConfigError` instead of a transformers error deep in the run."""
    return chat_setting(chat, model.tokenizer, model.name)


def chat_setting(chat: bool | None, tokenizer: Any, model_name: str) -> bool:
    """`resolve_chat` with the tokenizer alone (the checks that run before weights load)."""
    has = has_chat_template(tokenizer)
    if chat is None:
        return has
    if chat and not has:
        raise ConfigError(f"model {model_name} has no chat template; set data.chat: false "
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


class Section(BaseModel):
    """A config section: unknown keys rejected, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Enabled(Section):
    """An analysis with only an on/off switch (on by default)."""

    enabled: StrictBool = True


DeviceMapSetting = StrictStr | dict[
    StrictStr, StrictStr | StrictInt] | None


class ModelConfig(Section):
    """The model section of every kind. A kind that needs one modality subclasses it with
    `modality` (and a default `name`); the default accepts any model name."""

    modality: ClassVar[str | None] = None  # "speech", "vision": only such models are accepted
    modality_label: ClassVar[str] = ""  # "speech-to-text": "... is not a speech-to-text model"
    models_label: ClassVar[str] = ""  # "speech models": "...; speech models: <allowed>"
    allowed: ClassVar[str] = ""  # the names to suggest

    name: StrictStr = Field(
        "smollm2-135m", description="a bundled/tiny model name, a hub id or a local directory"
    )
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device_map: DeviceMapSetting = Field(
        None, description="null (the whole model on `device`), auto | balanced | balanced_low_0 | sequential "
        "(accelerate spreads the blocks over the GPUs), or a mapping {module path: cpu | disk | cuda:N}")
    max_memory: dict[StrictStr | StrictInt, StrictStr | StrictInt] | None = Field(
        None, description="null, or a mapping {device: size} (e.g. {cuda:0: 20GiB, cpu: 64GiB}) bounding a "
        "device_map")
    offload_folder: Path | None = Field(
        None, description="a directory for blocks a device_map puts on 'disk' (null: a temporary directory)")

    @field_validator("device_map")
    @classmethod
    def _device_map(cls, device_map: Any) -> Any:
        return _placement_checked(device_map, None)

    @field_validator("max_memory")
    @classmethod
    def _max_memory(cls, max_memory: Any, info: ValidationInfo) -> Any:
        _placement_checked(info.data.get("device_map"), max_memory)
        return max_memory

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        try:
            info = describe_model_name(name)
        except ModelLoadError as exc:
            suffix = f"; {cls.models_label}: {cls.allowed}" if cls.modality else ""
            raise ValueError(f"{exc}{suffix}") from None
        if cls.modality is not None and info.modality != cls.modality:
            raise ValueError(f"{name!r} is not a {cls.modality_label} model; allowed: {cls.allowed}")
        return name


def _placement_checked(device_map: Any, max_memory: Any) -> Any:
    """`device_map` unchanged, or a ValueError with `interp.models.placement`'s one line (devices that
    exist here, known strategies, readable sizes; no weights needed)."""
    from interp.models.placement import check_device_map

    try:
        check_device_map(device_map, max_memory)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix(f"{e.path}: ")) from None
    return device_map


class ExecutionConfig(Section):
    """Where sweeps run (`interp.io.execution`): `local` in this process, or `ray` on `workers`
    Ray actors that each load the model once; the tables are the same either way."""

    backend: Literal["local", "ray"] = "local"
    address: StrictStr | None = Field(
        None, description='null (start a local Ray instance), "auto" (the cluster this machine is in) or '
        '"ray://host:port"')
    workers: PositiveInt = Field(1, description="an integer >= 1 (Ray actors, each with its own model)")
    gpus_per_worker: NonNegativeInt | None = Field(
        None, description="an integer >= 0, or null: 1 when the model's device is a GPU, 0 on the CPU")
    cpus_per_worker: PositiveInt = Field(1, description="an integer >= 1 (each worker's torch threads)")


class OutputConfig(Section):
    runs_dir: Path = Field(Path("runs"), description="a directory path")
    top_k: PositiveInt = Field(10, description="an integer >= 1")


ExperimentName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class BaseExperimentConfig(Section):
    """What every experiment kind's config has: `kind` (each kind narrows it to its own
    Literal), `name`, `description`, `seed`, `model`, `output` and `execution`."""

    kind: str
    name: ExperimentName = Field(
        description="a name of letters, digits, '_' and '-' (used in the run directory name)"
    )
    description: StrictStr = ""
    seed: NonNegativeInt = Field(0, description="an integer >= 0")
    model: ModelConfig = ModelConfig()
    output: OutputConfig = OutputConfig()
    execution: ExecutionConfig = ExecutionConfig()

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (lists, strings, numbers) that `parse_config` accepts back."""
        return self.model_dump(mode="json")
