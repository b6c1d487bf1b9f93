"""Errors raised by interp. Each says what was wrong and what is allowed.

Every error the user can cause derives from `InterpError`, so the CLI can print it without a
traceback while real bugs still show one.
"""

from __future__ import annotations


class InterpError(Exception):
    """Base class for errors caused by user input (configs, datasets, model names)."""


class ConfigError(InterpError):
    """An experiment config is invalid. `path` is the YAML path of the bad field."""

    def __init__(self, message: str, path: str | None = None, file: str | None = None):
        self.path = path
        self.file = file
        super().__init__("".join(f"{part}: " for part in (file, path) if part) + message)


class DatasetError(InterpError):
    """A prompt dataset is invalid. `line` is 1-based where the data came from a file."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        self.line = line
        self.file = file
        where = (file or "") + ("" if line is None else f"{':' if file else 'line '}{line}")
        super().__init__(f"{where}: {message}" if where else message)


class ModelLoadError(InterpError):
    """A model could not be found or loaded."""


class SiteError(InterpError):
    """An activation site is malformed or does not exist in the model."""


class UnsupportedError(InterpError):
    """An analysis cannot be exact on this model and refuses; the message says why (the
    family, the site or step, and what is supported instead)."""


class ExactnessError(InterpError):
    """A built-in exactness check failed on the actual data (e.g. DLA's parts do not sum to
    the model's logit difference): the numbers would be wrong, so the step stops."""
