"""A model's tokenizer without its weights, for checks that run before a model loads
(`interp validate`, the preflight of `interp run`).

    >>> tok = load_tokenizer("tiny-llama")     # the SmolLM2 tokenizer, no weights read
"""

from __future__ import annotations

from typing import Any

from interp.core.errors import ModelLoadError
from interp.models.registry import describe_model_name, model_fact

__all__ = ["load_tokenizer"]


def load_tokenizer(name: str) -> Any:
    """The tokenizer of model `name` (bundled, tiny, local or hub), marked with the model's
    `prepend_bos` fact like `load_model` marks it; None for a vision-language model (its
    checks need images, not text)."""
    info = describe_model_name(name)
    if info.modality == "vision":
        return None
    if info.modality == "speech":
        from interp.models import whisper

        return whisper.load_tokenizer()
    if info.kind == "tiny" or name == "smollm2-135m":
        from interp.models import smollm2

        tok = smollm2.load_tokenizer()
    elif info.kind == "bundled":
        import importlib

        from interp.core.paths import cache_root
        from interp.models.cache import gguf_digest
        from interp.models.registry import BUNDLED_SOURCES

        gguf = importlib.import_module(BUNDLED_SOURCES[name][0]).gguf_path()
        saved = cache_root() / name / gguf_digest(gguf, name)[:16]  # where load_model keeps it
        tok = (_auto(str(saved), local_files_only=True) if (saved / "tokenizer.json").is_file()
               else _auto(str(gguf.parent), gguf_file=gguf.name, local_files_only=True))
    else:
        tok = _auto(name, local_files_only=info.kind == "local")
    tok.interp_prepend_bos = model_fact(name, "prepend_bos")
    return tok


def _auto(name: str, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, **kw)
    except OSError as e:
        raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {str(e).splitlines()[0]}") from e
