"""Loading real and test models behind the `HookedModel` port."""

from interp.models.loading import BACKENDS, load_model
from interp.models.registry import describe_model_name, known_names

__all__ = ["BACKENDS", "load_model", "describe_model_name", "known_names"]
