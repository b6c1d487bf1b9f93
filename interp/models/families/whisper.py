"""Where each site lives in a Hugging Face Whisper model (`WhisperForConditionalGeneration`).

An encoder-decoder has two stacks, so this table is keyed by (stack, component); each row is
(module path template, "input" | "output", tuple index or None), listed in the order one forward
reaches them (the encoder runs entirely before the decoder; nnsight 0.8 reads module values in
execution order). Pattern rows are the attention modules' second output, the softmax weights
(batch, head, query, key), which only the eager attention path returns: the decoder runs eager,
so its self- and cross-attention patterns are offered; the encoder runs SDPA (see
`interp.models.whisper`), so its self-attention pattern is not.

    MODULE_SITES[("decoder", "cross_pattern")]
    # ('model.decoder.layers.{layer}.encoder_attn', 'output', 1)
"""

from __future__ import annotations

STACKS = ("encoder", "decoder")

# Components with a head axis, and where it is: (batch, head, query, key).
HEAD_AXIS = {"pattern": 1, "cross_pattern": 1}
# Components that exist once per stack (no layer).
LAYERLESS = {"embed", "resid_final", "out"}

MODULE_SITES: dict[tuple[str, str], tuple[str, str, int | None]] = {
    # encoder: conv front end + positions -> 4 pre-norm blocks -> final LayerNorm
    ("encoder", "embed"): ("model.encoder.layers.0", "input", None),  # conv stack + positions
    ("encoder", "resid_pre"): ("model.encoder.layers.{layer}", "input", None),
    ("encoder", "attn_out"): ("model.encoder.layers.{layer}.self_attn", "output", 0),
    ("encoder", "resid_mid"): ("model.encoder.layers.{layer}.final_layer_norm", "input", None),
    ("encoder", "mlp_out"): ("model.encoder.layers.{layer}.fc2", "output", None),
    ("encoder", "resid_post"): ("model.encoder.layers.{layer}", "output", 0),
    ("encoder", "resid_final"): ("model.encoder.layer_norm", "input", None),
    ("encoder", "out"): ("model.encoder.layer_norm", "output", None),  # what cross-attention reads
    # decoder: token + position embedding -> blocks of self-attn, cross-attn, MLP -> LayerNorm
    ("decoder", "embed"): ("model.decoder.embed_tokens", "output", None),
    ("decoder", "resid_pre"): ("model.decoder.layers.{layer}", "input", None),
    ("decoder", "pattern"): ("model.decoder.layers.{layer}.self_attn", "output", 1),
    ("decoder", "attn_out"): ("model.decoder.layers.{layer}.self_attn", "output", 0),
    ("decoder", "cross_pattern"): ("model.decoder.layers.{layer}.encoder_attn", "output", 1),
    ("decoder", "cross_attn_out"): ("model.decoder.layers.{layer}.encoder_attn", "output", 0),
    ("decoder", "mlp_out"): ("model.decoder.layers.{layer}.fc2", "output", None),
    ("decoder", "resid_post"): ("model.decoder.layers.{layer}", "output", 0),
    ("decoder", "resid_final"): ("model.decoder.layer_norm", "input", None),
    ("decoder", "out"): ("model.decoder.layer_norm", "output", None),
}
