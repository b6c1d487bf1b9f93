"""Family facts the analyses rely on, read from the Hugging Face config (data, not branches).

What differs between decoder families and matters for exactness:

- the output tail after ``lm_head``: a logit scale (Granite divides by ``logits_scaling``,
  Cohere multiplies by ``logit_scale``) and a final softcap (Gemma 2/3
  ``final_logit_softcapping``);
- attention: the score softcap (Gemma 2 ``attn_logit_softcapping``) and a per-layer sliding
  window (Mistral, Qwen2, Gemma 2/3, Phi-3, Starcoder2, GPT-Neo local layers);
- the block layout: parallel attention + MLP (GPT-J, GPT-NeoX, Falcon, Phi, Cohere), norms
  applied to the attention / MLP output before the residual add (Gemma 2/3, OLMo 2), and a
  residual multiplier (Granite).

Each fact is a row in a table below, keyed by the config attribute or ``model_type`` that
carries it; `arch_facts` reads them off one config. The model's own modules compute
everything else (norms through `interp.core.norms.probe_norm`, attention through the bridge).

    >>> arch_facts(hf_model).tail.describe()
    'logits * 0.25, then softcap 3.0'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# config attribute -> how the CausalLM head applies it to lm_head's output.
TAIL_SCALES = {"logits_scaling": "divide", "logit_scale": "multiply"}
TAIL_SOFTCAP = "final_logit_softcapping"
ATTN_SOFTCAP = "attn_logit_softcapping"
RESIDUAL_MULTIPLIER = "residual_multiplier"

# Attention module attributes holding the factor on q.k (most families: `scaling`; Falcon).
SCALE_ATTRS = ("scaling", "inv_norm_factor")
# Families whose attention modules carry no such attribute: model_type -> rule.
UNSCALED = {"gpt_neo"}  # GPT-Neo's scores are not divided by sqrt(d_head)

# Block layouts. Parallel: attention and MLP both read the block input; a family listed with a
# config attribute is parallel when that attribute is true.
PARALLEL_ALWAYS = {"gptj", "phi", "cohere", "cohere2"}
PARALLEL_IF = {"gpt_neox": ("use_parallel_residual",), "stablelm": ("use_parallel_residual",),
               "falcon": ("parallel_attn", "new_decoder_architecture")}
# Norms applied to a sublayer's output before the residual add, per family: (attention, MLP)
# module paths inside the HF model.
POST_NORMS = {
    "gemma2": ("model.layers.{layer}.post_attention_layernorm", "model.layers.{layer}.post_feedforward_layernorm"),
    "gemma3_text": ("model.layers.{layer}.post_attention_layernorm", "model.layers.{layer}.post_feedforward_layernorm"),
    "gemma3": ("model.language_model.layers.{layer}.post_attention_layernorm",
               "model.language_model.layers.{layer}.post_feedforward_layernorm"),
    "olmo2": ("model.layers.{layer}.post_attention_layernorm", "model.layers.{layer}.post_feedforward_layernorm"),
}


@dataclass(frozen=True)
class OutputTail:
    """logits = softcap(lm_head(norm(x)) * scale)."""

    scale: float = 1.0
    softcap: float | None = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def describe(self) -> str:
        parts = [f"logits * {self.scale:g}"] if self.scale != 1.0 else []
        if self.softcap is not None:
            parts.append(f"softcap {self.softcap:g}")
        return ", then ".join(parts) or "lm_head only"


@dataclass(frozen=True)
class ArchFacts:
    model_type: str
    tail: OutputTail
    attn_softcap: float | None
    parallel_block: bool
    residual_multiplier: float
    attn_post_norm: str | None  # module path template with {layer}
    mlp_post_norm: str | None
    windows: tuple[int | None, ...]  # per layer: the sliding window, None for global attention

    def describe(self) -> dict[str, str]:
        return {
            "output tail": self.tail.describe(),
            "attention softcap": f"{self.attn_softcap:g}" if self.attn_softcap else "none",
            "block": "parallel attention + MLP" if self.parallel_block else "sequential",
            "post-sublayer norms": "yes" if self.attn_post_norm else "no",
            "residual multiplier": f"{self.residual_multiplier:g}",
            "sliding windows": ", ".join(f"L{i}:{w}" for i, w in enumerate(self.windows) if w) or "none",
        }


def _num(config: Any, attr: str) -> float | None:
    v = getattr(config, attr, None)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _windows(config: Any, n_layers: int) -> tuple[int | None, ...]:
    window = getattr(config, "sliding_window", None) or getattr(config, "window_size", None)
    types = getattr(config, "layer_types", None)
    if types is None and getattr(config, "attention_layers", None) is not None:  # GPT-Neo
        types = ["sliding_attention" if t == "local" else "full_attention" for t in config.attention_layers]
    if types is None:
        if getattr(config, "use_sliding_window", True) is False:
            return (None,) * n_layers
        types = ["sliding_attention" if window else "full_attention"] * n_layers
    return tuple(window if (t == "sliding_attention" and window) else None for t in types[:n_layers])


def arch_facts(hf_model: torch.nn.Module) -> ArchFacts:
    config = hf_model.config
    config = getattr(config, "text_config", None) or config
    model_type = getattr(config, "model_type", "") or ""
    scale = 1.0
    for attr, how in TAIL_SCALES.items():
        v = _num(config, attr)
        if v is not None:
            scale = scale / v if how == "divide" else scale * v
    n_layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "num_layers", 0) or 0)
    parallel = model_type in PARALLEL_ALWAYS or any(
        bool(getattr(config, a, False)) for a in PARALLEL_IF.get(model_type, ()))
    post = POST_NORMS.get(model_type, (None, None))
    return ArchFacts(
        model_type=model_type,
        tail=OutputTail(scale, _num(config, TAIL_SOFTCAP)),
        attn_softcap=_num(config, ATTN_SOFTCAP),
        parallel_block=parallel,
        residual_multiplier=_num(config, RESIDUAL_MULTIPLIER) or 1.0,
        attn_post_norm=post[0],
        mlp_post_norm=post[1],
        windows=_windows(config, n_layers),
    )


def attention_scale_from_config(config: Any, layer: int, d_head: int) -> float:
    """The factor on q.k where the attention module does not store it (GPT-2, GPT-Neo)."""
    if getattr(config, "model_type", None) in UNSCALED:
        return 1.0
    scale = d_head**-0.5 if getattr(config, "scale_attn_weights", True) else 1.0
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        scale /= layer + 1
    return scale
