"""Refuse a run whose estimated cost is out of reach before it starts (issue 14).

Work: a kind's `estimate` counts the forward passes each costly config field asks for; more
than `MAX_FORWARDS` in all is a `ConfigError` naming the field to lower.

Memory: the peak is estimated as the model's weights (parameter count x dtype bytes: from the
loaded model when there is one, else from what is known about the model name without loading
any weight, `model_shape`) plus the largest activation block one of the kind's analyses holds
at once (the kind's `memory(cfg, shape, data) -> {field: bytes}`, with `sweep_bytes` and
`forward_bytes` for the usual blocks). More than the memory available (`available_memory`:
the CUDA device's free memory for a CUDA run, else MemAvailable) is a `ConfigError` with the
estimate, the available figure and the field to lower. Both checks run in `interp validate`
and before `interp run` loads weights (on lower bounds from the config alone), and again after
the kind has prepared its data; `--force` skips them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.core.errors import ConfigError
from interp.io.registry import Kind

__all__ = ["MAX_FORWARDS", "ModelShape", "check_work", "count_forwards", "check_memory", "model_shape",
           "available_memory", "attribute", "forward_bytes", "sweep_bytes", "prefill_bytes", "pairs_peak", "variants",
           "fmt_bytes", "PROMPT_BYTES"]

MAX_FORWARDS = 10**7
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PROMPT_BYTES = 2048  # a generated prompt pair in memory (strings, token ids, metadata): a rough lower bound


def check_work(kind: Kind, cfg: Any, model: Any, data: Any, *, force: bool = False) -> int:
    """Both limits: the estimated forward passes of the run (0 when the kind has no estimate),
    raising when they exceed `MAX_FORWARDS`, then the peak memory (`check_memory`); neither
    raises when `force` is true. Returns the forward passes."""
    forwards = count_forwards(kind, cfg, model, data, force=force)
    check_memory(kind, cfg, model, data, force=force)
    return forwards


def count_forwards(kind: Kind, cfg: Any, model: Any, data: Any, *, force: bool = False) -> int:
    """The estimated forward passes of the run (0 when the kind has no estimate); raises when
    they exceed `MAX_FORWARDS` and `force` is false."""
    if kind.estimate is None:
        return 0
    costs = kind.estimate(cfg, model, data)
    total = sum(costs.values())
    if total > MAX_FORWARDS and not force:
        field, most = max(costs.items(), key=lambda kv: kv[1])
        raise ConfigError(f"the run needs about {total:.2e} forward passes (more than {MAX_FORWARDS:.0e}), "
                          f"{most:.2e} of them for this setting; lower it, disable the analysis, or run with "
                          "--force", path=field)
    return total


# ------------------------------------------------------------------------------ model shape


@dataclass(frozen=True)
class ModelShape:
    """What a memory estimate needs to know about a model. `params` counts every weight;
    `dtype_bytes` is the size of one value in the run's dtype."""

    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int
    params: int
    dtype_bytes: int = 4

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes


# Bundled and tiny models, without loading them: (layers, heads, d_model, vocab, parameters).
# The tiny models share the SmolLM2 tokenizer's vocabulary (49152) and d_model 64.
KNOWN_SHAPES: dict[str, tuple[int, int, int, int, int]] = {
    "smollm2-135m": (30, 9, 576, 49152, 134_515_008),
    "gemma3-270m": (18, 4, 640, 262144, 268_098_176),
    "whisper-tiny.en": (4, 6, 384, 51864, 37_760_640),
    "shapes-llava": (30, 9, 576, 49152, 157_000_000),  # SmolLM2 + DINOv2-small + projector
}
TINY_SHAPE = (4, 4, 64, 49152, 6_500_000)  # untied embeddings at most: 2 x 49152 x 64 + the blocks


def model_shape(cfg: Any, model: Any = None) -> ModelShape | None:
    """The shape of the run's model: from the loaded `model` (its spec, its parameters), else
    from the model name alone (bundled and tiny models from `KNOWN_SHAPES`, a local directory or
    a hub id already in the Hugging Face cache from its config.json); None when unknown."""
    dtype_bytes = DTYPE_BYTES.get(str(cfg.model.dtype), 4)
    if model is not None:
        return _loaded_shape(model, dtype_bytes)
    name = str(cfg.model.name)
    if name in KNOWN_SHAPES:
        return ModelShape(*KNOWN_SHAPES[name], dtype_bytes)
    if name.startswith("tiny-"):
        return ModelShape(*TINY_SHAPE, dtype_bytes)
    config = _hf_config(name)
    return None if config is None else _config_shape(config, dtype_bytes)


def _loaded_shape(model: Any, dtype_bytes: int) -> ModelShape:
    spec = model.spec
    hf = getattr(model, "hf_model", None)
    if hf is not None:
        params = sum(p.numel() for p in hf.parameters())
        dtype_bytes = next(hf.parameters()).element_size()
    else:  # no module to count: the blocks' weights from the spec
        params = spec.d_vocab * spec.d_model + 12 * _layers(spec) * spec.d_model**2
    return ModelShape(_layers(spec), spec.n_heads, spec.d_model, spec.d_vocab, params, dtype_bytes)


def _layers(spec: Any) -> int:
    return int(getattr(spec, "n_layers", None) or getattr(spec, "n_decoder_layers", 1))


def _hf_config(name: str) -> dict | None:
    path = Path(name).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # not a hub id, or no hub client: unknown
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config.get("text_config", config) if isinstance(config, dict) else None


def _config_shape(c: dict, dtype_bytes: int) -> ModelShape | None:
    d = c.get("hidden_size") or c.get("n_embd") or c.get("d_model")
    layers = c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers")
    heads = c.get("num_attention_heads") or c.get("n_head") or 1
    vocab = c.get("vocab_size")
    if not (isinstance(d, int) and isinstance(layers, int) and isinstance(vocab, int)):
        return None
    mlp = c.get("intermediate_size") or 4 * d
    tied = c.get("tie_word_embeddings", True)
    params = vocab * d * (1 if tied else 2) + layers * (4 * d * d + 3 * d * mlp)
    return ModelShape(layers, int(heads), d, vocab, params, dtype_bytes)


# ------------------------------------------------------------------------------ activations


def forward_bytes(shape: ModelShape, rows: int, tokens: int, *, logits_positions: int = 1) -> int:
    """Activations one forward of `rows` sequences of `tokens` holds at its widest block: the
    residual, q/k/v, attention output and MLP hidden state (about 12 x d_model per token),
    attention scores and probabilities (2 x heads x tokens per token), and the logits of
    `logits_positions` positions per row."""
    per_token = 12 * shape.d_model + 2 * shape.n_heads * tokens
    return shape.dtype_bytes * rows * (tokens * per_token + logits_positions * shape.d_vocab)


def sweep_bytes(shape: ModelShape, n: int, tokens: int, variants_per_forward: int) -> int:
    """One chunk of the sweep engine (`interp.analyses.sweep`): the block inputs captured for
    `n` base prompts at every layer, kept for the whole sweep, plus one resumed forward of
    `variants_per_forward` stacked copies of them (last-position readout)."""
    captured = 2 * shape.n_layers * n * tokens * shape.d_model * shape.dtype_bytes  # clean and corrupt
    return captured + forward_bytes(shape, n * variants_per_forward, tokens)


# ------------------------------------------------------------------------------ the check


def available_memory(device: str = "auto") -> tuple[int, str]:
    """(bytes available, where): the CUDA device's free memory for a CUDA run (`device` cuda,
    or auto with a GPU), else the machine's MemAvailable (psutil if installed, else
    /proc/meminfo); (0, ...) when unknown."""
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return int(free), "free on the CUDA device"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "available (MemAvailable)"
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available (MemAvailable)"
    except (OSError, ValueError, IndexError):
        pass
    return 0, "unknown"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(kind: Kind, cfg: Any, model: Any, data: Any, *, force: bool = False) -> int:
    """The estimated peak memory of the run in bytes (0 when the model's shape is unknown):
    the weights plus the largest block of `kind.memory`; raises a `ConfigError` naming the field
    to lower when it exceeds `available_memory` and `force` is false."""
    shape = model_shape(cfg, model)
    if shape is None:
        return 0
    blocks = kind.memory(cfg, shape, data) if kind.memory is not None else {}
    field, block = max(blocks.items(), key=lambda kv: kv[1]) if blocks else ("model.name", 0)
    total = shape.weight_bytes + block
    avail, where = available_memory(str(cfg.model.device))
    # A loaded model's weights are already out of the available memory: only the block must fit.
    need, weights_in = (block, 0) if model is not None else (total, shape.weight_bytes)
    if force or avail <= 0 or need <= avail:
        return total
    if weights_in > avail:  # the weights alone do not fit: no setting helps but the model
        field = "model.name"
    lower = ("use a smaller model or a 2-byte model.dtype (bfloat16)" if field == "model.name"
             else "lower this setting")
    loaded = ", loaded" if model is not None else ""
    raise ConfigError(f"the run needs about {fmt_bytes(total)} of memory at its peak ({fmt_bytes(shape.weight_bytes)} "
                      f"of weights for {cfg.model.name}{loaded}, {fmt_bytes(block)} of data and activations for this "
                      f"setting), more than the {fmt_bytes(avail)} {where}; {lower}, or run with --force", path=field)


def prefill_bytes(shape: ModelShape, tokens: int, chunk: int) -> int:
    """A long prompt prefilled `chunk` tokens at a time: its key/value cache at every layer (keys
    and values of d_model each per token, an upper bound under grouped-query attention) and one
    chunk's forward attending to all of it."""
    cache = 2 * shape.n_layers * tokens * shape.d_model * shape.dtype_bytes
    scores = 2 * shape.n_heads * min(chunk, tokens) * tokens * shape.dtype_bytes
    return cache + scores + forward_bytes(shape, 1, min(chunk, tokens))


def variants(batch_size: int | str, cap: int) -> int:
    """Patch variants a sweep holds at once: `batch_size` up to `cap`; "auto" sizes its chunks to
    the free memory (and halves them on out-of-memory), so it counts as one."""
    return 1 if batch_size == "auto" else min(int(batch_size), cap)


def pairs_peak(shape: ModelShape, pairs: Any, variants_per_forward: int) -> int:
    """The largest `sweep_bytes` over the equal-length batches of tokenized pairs (`TokenizedPairs`)."""
    return max((sweep_bytes(shape, len(b), b.clean.shape[1], variants_per_forward) for b in pairs.batches), default=0)


def attribute(costs: dict[str, int], n: int, per_item: int, data_field: str, setting_field: str) -> None:
    """Add `n x per_item` (forward passes or bytes) to `costs` under the field of the larger
    factor: the data field when there are at least as many items as `per_item`, else the
    setting's field (so the field named is the one that is out of proportion)."""
    field = data_field if n >= per_item else setting_field
    costs[field] = costs.get(field, 0) + n * per_item
