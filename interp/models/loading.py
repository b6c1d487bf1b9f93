"""`load_model(name)`: a hooked model for a bundled, tiny, local or hub model.

    model = load_model("smollm2-135m")            # bundled real model (cached fp32 weights)
    model = load_model("gemma3-270m")             # bundled Gemma 3 270M base (prepend_bos=True)
    model = load_model("tiny-llama")              # random GQA model for tests
    model = load_model("path/to/hf_dir", device="cuda", dtype="bfloat16")
    model = load_model("tiny-llama", backend="nnsight")
    model = load_model("whisper-tiny.en")          # speech: a HookedSeq2SeqModel (nnsight)
    model = load_model("shapes-llava")             # vision: a VisionLanguageModel
    model = load_model("org/big-model", device_map="auto", max_memory={"cuda:0": "70GiB", "cpu": "200GiB"})
    model = load_model("tiny-llama", device_map={"model.layers.1": "disk", ...}, offload_folder="off")

Every one is a `HookedModel` (the port: spec, sites, hooks, forward); what else it can do is a
capability an analysis asks for (`interp.core.capabilities.require`), e.g. `AudioInput` for
Whisper, `ImageInput` for LLaVA, `Resumable` / `Unembedding` for the text backends.

A `device_map` (text models) places the blocks through accelerate (`interp.models.placement`):
a strategy ("auto", "balanced", ...) spreads them over the visible GPUs within `max_memory`, an
explicit {module path: device} puts each where it says ("cpu" / "disk": offloaded, its weights
moved in per forward). Then `device` is not used; inputs go to the embedding's device.

Backends: "transformer_lens" (default for text models; TransformerBridge hooks) and "nnsight"
(module hooks and nnsight traces; the only one for speech models: TransformerLens has no
Whisper adapter).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from interp.core.capabilities import LanguageModel
from interp.core.errors import ConfigError, ModelLoadError
from interp.core.model import HookedModel
from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel
from interp.models.cache import sha256_files
from interp.models.device import resolve_device, resolve_dtype
from interp.models.placement import (
    DeviceMap,
    MaxMemory,
    check_device_map,
    dispatch,
    is_dispatched,
    map_error,
    pretrained_kwargs,
)
from interp.models.registry import BUNDLED_SOURCES, describe_model_name, model_fact

BACKENDS = ("transformer_lens", "nnsight")


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    backend: str | None = None,
    seed: int = 0,
    device_map: DeviceMap | None = None,
    max_memory: MaxMemory | None = None,
    offload_folder: str | Path | None = None,
) -> HookedModel:
    """`backend=None` picks the model's default: "transformer_lens" for text, "nnsight" for
    speech models (which return a `HookedSeq2SeqModel`). `device_map` / `max_memory` /
    `offload_folder`: see the module docstring (a bad one is a `ConfigError` naming the field)."""
    if backend is not None and backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    info = describe_model_name(name)
    _check_placement(info.modality, backend, device_map, max_memory)
    dt = resolve_dtype(dtype)
    dev = resolve_device(device) if device_map is None else torch.device("cpu")  # built on the CPU, then placed
    placement = pretrained_kwargs(device_map, max_memory, offload_folder)
    if info.modality == "speech":
        return _load_speech(name, backend, dev, dt)
    if info.modality == "vision":  # a VisionLanguageModel (LLaVA; hooks on W_O, no TransformerLens)
        from interp.models.llava import load_llava

        return load_llava(name, local_only=info.kind != "hub", device=dev, dtype=dt)
    backend = backend or "transformer_lens"
    if info.kind == "tiny":
        from interp.models import smollm2
        from interp.models.tiny import build_tiny

        tok = smollm2.load_tokenizer()
        hf = build_tiny(name, vocab_size=len(tok), seed=seed)
        sha: str | None = _state_digest(hf)
    elif info.kind == "bundled":  # a text model: its module (BUNDLED_SOURCES) makes the fp32 directory
        path, sha = importlib.import_module(BUNDLED_SOURCES[name][0]).cached_dir()
        hf, tok = _load_hf_dir(str(path), dt, local_only=True, placement=placement)
    else:
        hf, tok = _load_hf_dir(name, dt, local_only=info.kind == "local", placement=placement)
        sha = _dir_digest(name) if info.kind == "local" else _hub_digest(hf)
    hf = hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    if device_map is None:
        hf = hf.to(device=dev, dtype=dt)
    elif not is_dispatched(hf):  # built in memory (tiny models): placed by accelerate's dispatch_model
        hf = dispatch(hf.to(dtype=dt), device_map, max_memory, offload_folder)
    return _wrap(backend, name, hf, tok, sha, prepend_bos=model_fact(name, "prepend_bos"))


def _check_placement(modality: str, backend: str | None, device_map: DeviceMap | None,
                     max_memory: MaxMemory | None) -> None:
    check_device_map(device_map, max_memory)
    if device_map is None:
        return
    if modality != "text":
        raise ConfigError(f"device maps are supported for text models only, not {modality} models (remove "
                          "model.device_map, use model.device)", path="model.device_map")
    if backend == "nnsight":
        # nnsight's trace hands meta tensors to an accelerate-dispatched model (seen here on
        # offloaded tiny models): refuse rather than fail mid-run.
        raise ConfigError("device maps work with the transformer_lens backend only; remove model.device_map "
                          "or use backend transformer_lens", path="model.device_map")


def _load_speech(name: str, backend: str | None, dev: torch.device, dt: torch.dtype) -> HookedSeq2SeqModel:
    if backend not in (None, "nnsight"):
        raise ModelLoadError(
            f"{name!r} is a speech encoder-decoder model; TransformerLens has no Whisper adapter, "
            "so it loads only with backend='nnsight' (the default for it)"
        )
    from interp.models import whisper
    hf, tok, sha, extra = whisper.load_whisper()
    hf = hf.to(device=dev, dtype=dt).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return HookedSeq2SeqModel(
        name, hf, tok, weights_sha256=sha, family=whisper.FAMILY, suppress_tokens=extra.get("suppress_ids", ()),
        begin_suppress_tokens=extra.get("suppress_ids_begin", ()), feature_extractor=whisper.feature_extractor,
    )


def _wrap(backend: str, name: str, hf: Any, tok: Any, sha: str | None, *, prepend_bos: bool = False) -> LanguageModel:
    # Plain-text prompt builders (needles, facts, MCQ with chat=False) read the convention off
    # the tokenizer they are given: a model that expects <bos> gets it in the text.
    tok.interp_prepend_bos = prepend_bos
    if backend == "nnsight":
        from interp.models.backends.nnsight_backend import NNsightModel

        return NNsightModel(name, hf, tok, weights_sha256=sha, prepend_bos=prepend_bos)
    from interp.models.backends.tlens import TLBridgeModel

    return TLBridgeModel(name, hf, tok, weights_sha256=sha, prepend_bos=prepend_bos)


def _load_hf_dir(name: str, dtype: torch.dtype, *, local_only: bool,
                 placement: dict[str, Any] | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        hf = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, local_files_only=local_only, attn_implementation="eager", **(placement or {})
        )
    except ValueError as e:  # raised for a device map that does not fit this model
        if not placement:
            raise
        raise map_error(e) from None
    except OSError as e:
        offline = "" if local_only else (
            " The Hugging Face hub could not be reached or has no such model; on a machine "
            "without a hub, download it elsewhere and pass the local directory instead."
        )
        first = str(e).splitlines()[0].rstrip(". ")
        raise ModelLoadError(f"cannot load model {name!r}: {first}.{offline}") from e
    return hf, tok


def _state_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dir_digest(path: str) -> str:
    files = [p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf")]
    return sha256_files(files) if files else "no-weight-files"


def _hub_digest(hf: Any) -> str | None:
    # The hub cache holds the files; their commit hash is the stable id.
    return getattr(hf.config, "_commit_hash", None) or os.environ.get("INTERP_UNKNOWN_SHA")
