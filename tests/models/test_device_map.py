"""Device maps (`load_model(device_map=...)`, `model.device_map` in configs): a model whose
blocks accelerate offloads to the CPU / disk (its hooks move the weights in per forward) gives
the same head patching, residual patching, path patching, AtP and DLA results as the plain
model; bad maps are one-line `ConfigError`s naming the field, found without weights."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import ConfigError
from interp.models.placement import available_devices, check_device_map

OFFLOAD = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
           "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "disk",
           "model.rotary_emb": "cpu", "lm_head": "disk"}


@pytest.mark.parametrize("device_map, max_memory, path, words", [
    ({"model.layers.1": "cuda:3"}, None, "model.device_map", "'cuda:3' for 'model.layers.1' does not exist here"),
    ({"model.layers.1": "gpu"}, None, "model.device_map", "is not a device name"),
    ("fancy", None, "model.device_map", "unknown device map 'fancy'"),
    ({}, None, "model.device_map", "non-empty mapping"),
    ("auto", {"cpu": "lots"}, "model.max_memory", "'lots' for 'cpu' is not a size"),
    ("auto", {"cuda:7": "1GiB"}, "model.max_memory", "'cuda:7' for max_memory does not exist here"),
    (None, {"cpu": "1GiB"}, "model.max_memory", "only used with model.device_map"),
])
def test_bad_placement_is_one_line(device_map, max_memory, path, words):
    with pytest.raises(ConfigError) as err:
        check_device_map(device_map, max_memory)
    assert err.value.path == path and words in str(err.value) and "\n" not in str(err.value)
    if path == "model.device_map" and "exist" in words:
        assert "available: " + ", ".join(available_devices()) in str(err.value)


def test_good_placement_passes():
    check_device_map("auto", {"cpu": "2GiB", "disk": 10**9})
    check_device_map({"model.layers.1": "disk", "lm_head": "cpu"}, None)


def test_config_names_the_field_without_weights():
    from interp.io.config import parse_config

    raw = {"kind": "patching", "name": "x", "model": {"name": "tiny-llama", "device_map": {"model.layers.1": "cuda:3"}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.path == "model.device_map" and "cuda:3" in str(err.value)


def test_module_not_in_model_and_nnsight_refused(tmp_path):
    from interp.models.loading import load_model

    with pytest.raises(ConfigError, match="no module 'model.blocks.1'"):
        load_model("tiny-llama", device_map={"model.blocks.1": "cpu"}, offload_folder=tmp_path)
    with pytest.raises(ConfigError, match="transformer_lens backend only"):
        load_model("tiny-llama", backend="nnsight", device_map="auto")


def _values(result):
    if isinstance(result, torch.Tensor):
        return result
    if hasattr(result, "results"):  # AtP
        return torch.cat([r.values.flatten() for r in result.results.values()])
    if hasattr(result, "contributions"):  # DLA
        return result.contributions
    return result.values


@pytest.mark.integration
def test_offloaded_blocks_give_the_plain_results(tmp_path):
    from interp.analyses.attribution import attribution_patching
    from interp.analyses.dla import direct_logit_attribution
    from interp.analyses.patching import patch_heads, patch_residual
    from interp.analyses.path_patching import Receiver, path_patch_senders
    from interp.models.loading import load_model
    from tests.conformance.support import make_pairs

    plain = load_model("tiny-llama")
    off = load_model("tiny-llama", device_map=OFFLOAD, offload_folder=tmp_path)
    assert off.hf_model.model.layers[1].self_attn.o_proj.weight.device.type == "meta"  # really offloaded
    assert off.device == torch.device("cpu")
    pairs = make_pairs(plain.spec.d_vocab, n=3, T=12)
    pb = pairs.batches[0]
    senders = [(layer, h) for layer in range(2) for h in range(plain.spec.n_heads)]
    analyses = {
        "head patching": lambda m: patch_heads(m, pairs),
        "head patching per position": lambda m: patch_heads(m, pairs, per_position=True, direction="noising"),
        "residual patching": lambda m: patch_residual(m, pairs),
        "path patching (k receiver)": lambda m: path_patch_senders(m, pb, senders, [Receiver("k", 2, 1)]),
        "path patching (logits)": lambda m: path_patch_senders(m, pb, senders, [Receiver("logits")]),
        "AtP with the QK fix": lambda m: attribution_patching(m, pairs, qk_fix=True),
        "DLA": lambda m: direct_logit_attribution(m, pairs),
    }
    for what, run in analyses.items():
        a, b = _values(run(plain)), _values(run(off))
        assert b.device.type == "cpu", what
        assert torch.allclose(a, b, atol=1e-5, rtol=0, equal_nan=True), f"{what}: {(a - b).abs().nan_to_num().max()}"


@pytest.mark.integration
def test_auto_map_under_max_memory_offloads(tmp_path):
    from interp.models.loading import load_model

    plain = load_model("tiny-llama")
    auto = load_model("tiny-llama", device_map="sequential", max_memory={"cpu": "13MB"}, offload_folder=tmp_path)
    assert "disk" in set(auto.hf_model.hf_device_map.values())
    tokens = plain.to_tokens(["When Mary and John went to the store, John gave a drink to"])
    assert torch.allclose(plain.forward(tokens), auto.forward(tokens), atol=1e-5)


@pytest.mark.integration
def test_offloaded_incremental_decoding_and_hooks(tmp_path):
    """Key/value-cached chunks on the offloaded model: the plain model's logits, and a hook's
    write (a head's z zeroed) reaches them the same way."""
    from interp.core.sites import Site
    from interp.models.loading import load_model

    plain = load_model("tiny-llama")
    off = load_model("tiny-llama", device_map=OFFLOAD, offload_folder=tmp_path)
    tokens = torch.randint(5, 200, (2, 21), generator=torch.Generator().manual_seed(0))

    def zero_head(t, _s):
        t = t.clone()
        t[:, :, 1] = 0
        return t

    outs = []
    for m in (plain, off):
        with torch.no_grad(), m.hooks([(Site("z", 1), zero_head)]):
            cache, parts = None, []
            for start in range(0, 21, 8):
                logits, cache = m.forward_incremental(tokens[:, start : start + 8], cache)
                parts.append(logits)
        outs.append(torch.cat(parts, 1))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)


@pytest.mark.integration
def test_a_local_directory_loads_through_from_pretrained(tmp_path):
    """Weights on disk (local, bundled or hub models) are placed by `from_pretrained(device_map=...)`."""
    from interp.models import smollm2
    from interp.models.loading import load_model
    from interp.models.tiny import build_tiny

    tok = smollm2.load_tokenizer()
    build_tiny("tiny-llama", vocab_size=len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    plain = load_model(str(tmp_path / "m"))
    off = load_model(str(tmp_path / "m"), device_map=OFFLOAD, offload_folder=tmp_path / "off")
    assert off.hf_model.model.layers[1].self_attn.o_proj.weight.device.type == "meta"
    tokens = plain.to_tokens(["When Mary and John went to the store, John gave a drink to"])
    torch.testing.assert_close(off.forward(tokens), plain.forward(tokens), atol=1e-5, rtol=1e-5)
    for where in (str(tmp_path / "m"), "tiny-llama"):  # from_pretrained, dispatch_model
        with pytest.raises(ConfigError, match="the device map gives no device to 30 modules") as err:
            load_model(where, device_map={"model.layers.1": "cpu"}, offload_folder=tmp_path / "off")
        assert err.value.path == "model.device_map" and "\n" not in str(err.value)
