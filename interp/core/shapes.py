"""Run-time checks of the tensor shapes written on signatures (jaxtyping), for the test suite.

Public functions say what they take and return with jaxtyping annotations
(`Float[Tensor, "batch pos d_model"]`, the aliases in `interp.core.types`). `check_package`
wraps every function and method of the package that has such an annotation in
`jaxtyping.jaxtyped(typechecker=check_shapes)`, so each call checks those arguments and the
return value, with dimension names bound across the call (`batch` in the input must be
`batch` in the output); jaxtyping reports a mismatch as its `TypeCheckError`, naming the
parameter, the value and the bound dimensions. Other annotations are the static type checker's.
Functions without a jaxtyping annotation are left as they are (no per-call cost).

The tests turn it on (`tests/conftest.py`); nothing is wrapped in normal use.

    wrapped = check_package("interp")   # the number of functions now checked
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Callable
from typing import Any

from jaxtyping import AbstractArray, jaxtyped

CHECKED: list[str] = []  # qualified names of the functions `check_package` has wrapped


def _array_hint(hint: Any) -> Any | None:
    """The jaxtyping array type in `hint` (itself, or inside `X | None`), else None."""
    if isinstance(hint, type) and issubclass(hint, AbstractArray):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arrays = [a for a in typing.get_args(hint) if _array_hint(a) is not None]
        return arrays[0] if len(arrays) == 1 else None
    return None


def array_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The jaxtyping array annotations of `fn` by parameter name ("return" for the result)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a name only imported for static checking: nothing to check at run time
        return {}
    return {name: a for name, hint in hints.items() if (a := _array_hint(hint)) is not None}


def check_shapes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The type checker `jaxtyped` applies: `fn` checking its jaxtyping-annotated arguments and
    return value (isinstance against the array types, inside jaxtyped's dimension memo)."""
    hints = array_hints(fn)
    if not hints:
        return fn
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            hint = hints.get(name)
            if hint is not None and value is not None and not isinstance(value, hint):
                raise TypeError(f"{fn.__qualname__}: argument {name!r} does not match {hint.__name__}")
        out = fn(*args, **kwargs)
        hint = hints.get("return")
        if hint is not None and out is not None and not isinstance(out, hint):
            raise TypeError(f"{fn.__qualname__}: the return value does not match {hint.__name__}")
        return out

    return checked


def _checked(fn: Any) -> Any:
    """`fn` wrapped when it is a plain function with a jaxtyping annotation, else None."""
    if not inspect.isfunction(fn) or getattr(fn, "__shape_checked__", False) or not array_hints(fn):
        return None
    wrapped = jaxtyped(typechecker=check_shapes)(fn)
    wrapped.__shape_checked__ = True
    CHECKED.append(f"{fn.__module__}.{fn.__qualname__}")
    return wrapped


def _wrap_class(cls: type, done: dict[int, Any]) -> None:
    for attr, value in list(vars(cls).items()):
        raw = value.__func__ if isinstance(value, staticmethod | classmethod) else value
        wrapped = done.get(id(raw)) or _checked(raw)
        if wrapped is None:
            continue
        done[id(raw)] = wrapped
        setattr(cls, attr, type(value)(wrapped) if isinstance(value, staticmethod | classmethod) else wrapped)


def check_package(package: str = "interp") -> int:
    """Import every module of `package` and wrap each function and method with a jaxtyping
    annotation, in its module and wherever another module imported it by name. Returns how
    many functions are now checked."""
    root = importlib.import_module(package)
    modules = [root] + [importlib.import_module(m.name)
                        for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")]
    done: dict[int, Any] = {}  # id(original) -> wrapped
    for module in modules:
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == module.__name__:
                _wrap_class(value, done)
            elif inspect.isfunction(value) and value.__module__ == module.__name__:
                wrapped = _checked(value)
                if wrapped is not None:
                    done[id(value)] = wrapped
    for module in modules:  # rebind every name that refers to an original
        for attr, value in list(vars(module).items()):
            if id(value) in done and inspect.isfunction(value):
                setattr(module, attr, done[id(value)])
    return len(done)
