"""CTranslate2 Whisper names -> Hugging Face weights: a random HF Whisper is written out in
CTranslate2's fused layout (here, by hand) and must come back identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.core.errors import ModelLoadError
from interp.models.ct2 import CT2Model
from interp.models.whisper import hf_state_dict, whisper_config


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float16)


def to_ct2(hf) -> CT2Model:
    """Write `hf` in CTranslate2's WhisperSpec naming: q/k/v fused, cross k/v fused, zero k bias."""
    sd = hf.state_dict()
    a: dict[str, np.ndarray] = {}
    cfg = hf.config

    def lin(src, dst, bias=True):
        a[f"{dst}/weight"] = _np(sd[f"{src}.weight"])
        if bias:
            a[f"{dst}/bias"] = _np(sd[f"{src}.bias"])

    def norm(src, dst):
        a[f"{dst}/gamma"], a[f"{dst}/beta"] = _np(sd[f"{src}.weight"]), _np(sd[f"{src}.bias"])

    zero = torch.zeros(cfg.d_model)
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            p, q = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            norm(f"{p}.self_attn_layer_norm", f"{q}/self_attention/layer_norm")
            s = f"{p}.self_attn"
            a[f"{q}/self_attention/linear_0/weight"] = _np(torch.cat([sd[f"{s}.{x}_proj.weight"] for x in "qkv"]))
            a[f"{q}/self_attention/linear_0/bias"] = _np(
                torch.cat([sd[f"{s}.q_proj.bias"], zero, sd[f"{s}.v_proj.bias"]]))
            lin(f"{s}.out_proj", f"{q}/self_attention/linear_1")
            if stack == "decoder":
                c = f"{p}.encoder_attn"
                norm(f"{p}.encoder_attn_layer_norm", f"{q}/attention/layer_norm")
                lin(f"{c}.q_proj", f"{q}/attention/linear_0")
                a[f"{q}/attention/linear_1/weight"] = _np(
                    torch.cat([sd[f"{c}.k_proj.weight"], sd[f"{c}.v_proj.weight"]]))
                a[f"{q}/attention/linear_1/bias"] = _np(torch.cat([zero, sd[f"{c}.v_proj.bias"]]))
                lin(f"{c}.out_proj", f"{q}/attention/linear_2")
            norm(f"{p}.final_layer_norm", f"{q}/ffn/layer_norm")
            lin(f"{p}.fc1", f"{q}/ffn/linear_0")
            lin(f"{p}.fc2", f"{q}/ffn/linear_1")
        norm(f"model.{stack}.layer_norm", f"{stack}/layer_norm")
        a[f"{stack}/position_encodings/encodings"] = _np(sd[f"model.{stack}.embed_positions.weight"])
        a[f"{stack}/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    a["decoder/embeddings/weight"] = _np(sd["model.decoder.embed_tokens.weight"])
    a["decoder/scale_embeddings"] = np.array(0, dtype=np.int8)
    a["decoder/projection/weight"] = a["decoder/embeddings/weight"]
    return CT2Model("WhisperSpec", 3, 6, a, {"decoder/projection/weight": "decoder/embeddings/weight"})


@pytest.fixture(scope="module")
def tiny_pair(tiny_whisper_factory):
    hf = tiny_whisper_factory(seed=3)
    with torch.no_grad():  # values representable in fp16, so the round trip is exact
        for p in hf.parameters():
            p.copy_(p.half().float())
    return hf, to_ct2(hf)


def test_state_dict_round_trip(tiny_pair):
    hf, ct2 = tiny_pair
    got = hf_state_dict(ct2, hf.config.encoder_layers, hf.config.decoder_layers)
    want = hf.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == torch.float32, k
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_config_read_off_the_arrays(tiny_pair):
    hf, ct2 = tiny_pair
    cfg = whisper_config(ct2, {"suppress_ids": [5, 6], "suppress_ids_begin": [7]})
    for key in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "max_source_positions",
                "max_target_positions"):
        assert getattr(cfg, key) == getattr(hf.config, key), key
    assert cfg.suppress_tokens == [5, 6] and cfg.begin_suppress_tokens == [7]


def test_not_a_whisper_spec(tiny_pair):
    _, ct2 = tiny_pair
    other = CT2Model("TransformerSpec", 1, 6, ct2.arrays)
    with pytest.raises(ModelLoadError, match="holds a 'TransformerSpec', not a WhisperSpec"):
        whisper_config(other, {})
