"""Pydantic validation errors -> one `ConfigError` that names the YAML path of each bad field
(`analyses.residual_patching.components[1]`) and says what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from interp.core.errors import ConfigError
from interp.io.schema import FieldError

__all__ = ["to_config_error", "allowed_keys", "describe_kind", "show", "yaml_scalar"]

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


def to_config_error(exc: ValidationError, file: str | None, root: type[BaseModel]) -> ConfigError:
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
    if isinstance(cause, FieldError):
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
        return f"invalid value {show(value)}; allowed: {ctx.get('expected')}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        model = _model_at(loc, root)
        keys = f" with keys: {', '.join(model.model_fields)}" if model else ""
        return f"expected a mapping{keys}; got {describe_kind(value)}"
    if kind in _EXPECTED:
        return f"expected {hint or _EXPECTED[kind]}; got {describe_kind(value)} {show(value)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}; got {show(value)}"
    if kind == "too_short":
        return "must not be empty" + (f"; expected {hint}" if hint else "")
    if kind == "string_pattern_mismatch":
        return f"invalid value {show(value)}; expected {hint or ctx.get('pattern')}"
    return f"{err['msg']}; got {show(value)}"


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


def allowed_keys(model: type[BaseModel]) -> str:
    return f"allowed top-level keys: {', '.join(model.model_fields)}"


def describe_kind(value: Any) -> str:
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


def yaml_scalar(value: Any) -> str:
    return "null" if value is None else repr(value)


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
