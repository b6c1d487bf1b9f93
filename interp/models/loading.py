"""`load_model(name)`: a hooked model for a bundled, tiny, local or hub model.

    model = load_model("smollm2-135m")            # bundled real model (cached fp32 weights)
    model = load_model("gemma3-270m")             # bundled Gemma 3 270M base (prepend_bos=True)
    model = load_model("tiny-llama")              # random GQA model for tests
    model = load_model("path/to/hf_dir", device="cuda", dtype="bfloat16")
    model = load_model("tiny-llama", backend="nnsight")
    model = load_model("whisper-tiny.en")          # speech: a HookedSeq2SeqModel (nnsight)
    model = load_model("shapes-llava")             # vision: a VisionLanguageModel

Every one is a `HookedModel` (the port: spec, sites, hooks, forward); what else it can do is a
capability an analysis asks for (`interp.core.capabilities.require`), e.g. `AudioInput` for
Whisper, `ImageInput` for LLaVA, `Resumable` / `Unembedding` for the text backends.

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
from interp.core.errors import ModelLoadError
from interp.core.model import HookedModel
from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel
from interp.models.cache import sha256_files
from interp.models.device import resolve_device, resolve_dtype
from interp.models.registry import BUNDLED_SOURCES, describe_model_name, model_fact

BACKENDS = ("transformer_lens", "nnsight")


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    backend: str | None = None,
    seed: int = 0,
) -> HookedModel:
    """`backend=None` picks the model's default: "transformer_lens" for text, "nnsight" for
    speech models (which return a `HookedSeq2SeqModel`)."""
    if backend is not None and backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    info = describe_model_name(name)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
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
        hf, tok = _load_hf_dir(str(path), dt, local_only=True)
    else:
        hf, tok = _load_hf_dir(name, dt, local_only=info.kind == "local")
        sha = _dir_digest(name) if info.kind == "local" else _hub_digest(hf)
    hf = hf.to(device=dev, dtype=dt).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return _wrap(backend, name, hf, tok, sha, prepend_bos=model_fact(name, "prepend_bos"))


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


def _load_hf_dir(name: str, dtype: torch.dtype, *, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        hf = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, local_files_only=local_only, attn_implementation="eager"
        )
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
