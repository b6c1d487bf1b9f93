"""Run-time checks of the tensor shapes written on signatures (jaxtyping), for the test suite.

Public functions say what they take and return with jaxtyping annotations
(`Float[Tensor, "batch pos d_model"]`, the aliases in `interp.core.types`). `check_shapes` is the
type checker jaxtyping calls for each wrapped function: it checks only the arguments and return
values annotated with a jaxtyping array type (or `X | None` of one), so dimension names bind
across a call (`batch` in the input must be `batch` in the output), and leaves every other
annotation to the static type checker. The tests turn it on for the whole package with

    install_import_hook(["interp.core", "interp.analyses"], "interp.core.shapes.check_shapes")

(see `tests/conftest.py`); nothing is wrapped in normal use, so it costs nothing there.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from jaxtyping import AbstractArray


class ShapeError(TypeError):
    """A tensor's dtype or shape does not match its jaxtyping annotation (jaxtyping reports it
    as its `TypeCheckError`, with the parameter, the value and the bound dimensions)."""


def _array_hint(hint: Any) -> Any | None:
    """The jaxtyping array type in `hint` (itself, or inside `X | None`), else None."""
    if isinstance(hint, type) and issubclass(hint, AbstractArray):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arrays = [a for a in typing.get_args(hint) if _array_hint(a) is not None]
        return arrays[0] if len(arrays) == 1 else None
    return None


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a name only imported for static checking: nothing to check at run time
        return {}
    return {name: a for name, hint in hints.items() if (a := _array_hint(hint)) is not None}


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return f"{getattr(value, 'dtype', '')} {tuple(shape)}"


def check_shapes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so its jaxtyping-annotated arguments and return value are checked when called
    (inside `jaxtyped`, which binds the dimension names for the call)."""
    if isinstance(fn, type) or not callable(fn):
        return fn
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    resolved: dict[str, Any] | None = None

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        nonlocal resolved
        if resolved is None:  # resolved on first call: forward references exist by then
            resolved = _hints(fn)
        if not resolved:
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            hint = resolved.get(name)
            if hint is not None and value is not None and not isinstance(value, hint):
                raise ShapeError(f"{fn.__qualname__}: argument {name!r} is {_describe(value)}, "
                                 f"expected {hint.__name__}")
        out = fn(*args, **kwargs)
        hint = resolved.get("return")
        if hint is not None and out is not None and not isinstance(out, hint):
            raise ShapeError(f"{fn.__qualname__}: returned {_describe(out)}, expected {hint.__name__}")
        return out

    return checked
