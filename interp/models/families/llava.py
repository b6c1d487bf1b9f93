"""Where the parts of a Hugging Face LLaVA (`LlavaForConditionalGeneration`) live.

One table of module paths (relative to the HF model) that `VisionLanguageModel` reads; the
language model's layers follow the Llama layout (also Mistral, Vicuna, SmolLM2), so the per-head
attention output (before W_O) is the input of each layer's ``self_attn.o_proj``.

    MODULES["attn_out_proj"]   # "model.language_model.layers.{layer}.self_attn.o_proj"
"""

from __future__ import annotations

MODULES: dict[str, str] = {
    "vision_tower": "model.vision_tower",
    "projector": "model.multi_modal_projector",
    "language_model": "model.language_model",
    "embed_tokens": "model.language_model.embed_tokens",
    "layers": "model.language_model.layers",
    "attn_out_proj": "model.language_model.layers.{layer}.self_attn.o_proj",
    "lm_head": "lm_head",
}
# HF `config.model_type` values this table describes.
MODEL_TYPES = ("llava",)
