"""`load_model`: tiny, local-directory and hub names; device/dtype/backend errors."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import ModelLoadError
from interp.core.model import HookedModel
from interp.models.device import DTYPES, resolve_device, resolve_dtype
from interp.models.loading import BACKENDS, load_model
from interp.models.tiny import build_tiny

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ring to",
]


def test_tiny_model_spec(tiny_models):
    llama, gpt2 = tiny_models["tiny-llama"], tiny_models["tiny-gpt2"]
    assert isinstance(llama, HookedModel)
    assert (llama.spec.n_layers, llama.spec.n_heads, llama.spec.n_kv_heads, llama.spec.d_head) == (
        4,
        4,
        2,
        16,
    )
    assert (gpt2.spec.n_layers, gpt2.spec.n_heads, gpt2.spec.n_kv_heads, gpt2.spec.d_head) == (
        4,
        4,
        4,
        16,
    )
    for m in (llama, gpt2):
        assert m.spec.d_model == 64 and m.spec.d_vocab == len(m.tokenizer)
        assert m.backend == "transformer_lens" and m.dtype == torch.float32
        assert m.device == torch.device("cpu")
        assert isinstance(m.weights_sha256, str) and len(m.weights_sha256) == 64
    assert llama.weights_sha256 != gpt2.weights_sha256


def _assert_frozen(model) -> None:
    trainable = [n for n, p in model.bridge.named_parameters() if p.requires_grad]
    assert not trainable, f"parameters left trainable: {trainable[:4]}"
    assert not model.forward(model.to_tokens(PROMPTS[0])).requires_grad


def test_tiny_llama_is_frozen(tiny_models):
    _assert_frozen(tiny_models["tiny-llama"])


def test_tiny_gpt2_is_frozen(tiny_models):
    _assert_frozen(tiny_models["tiny-gpt2"])


def test_tiny_is_seeded(tiny_models, tokenizer):
    again = load_model("tiny-llama")
    assert again.weights_sha256 == tiny_models["tiny-llama"].weights_sha256
    other = load_model("tiny-llama", seed=1)
    assert other.weights_sha256 != again.weights_sha256
    toks = again.to_tokens(PROMPTS[:1])
    assert not torch.allclose(other.forward(toks), again.forward(toks))
    # build_tiny leaves the global RNG alone.
    state = torch.random.get_rng_state()
    build_tiny("tiny-gpt2", vocab_size=len(tokenizer), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_load_local_hf_directory(tmp_path, tokenizer, raw_tiny, tiny_name):
    raw_tiny.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert model.name == str(tmp_path)
    assert len(model.weights_sha256) == 64
    toks = model.to_tokens(PROMPTS)
    with torch.no_grad():
        expected = raw_tiny(input_ids=toks).logits
    got = model.forward(toks)
    assert (got - expected).abs().max().item() <= 1e-4
    assert model.spec.n_layers == 4


def test_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # The env var is read when huggingface_hub is imported, so patch its constant too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-org-xyz/no-such-model")
    msg = str(e.value)
    assert "cannot load model 'no-such-org-xyz/no-such-model'" in msg
    assert "local directory" in msg  # says what to do instead


def test_hub_error_message_has_no_double_period(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-org-xyz/no-such-model")
    assert ".." not in str(e.value)


def test_local_directory_without_weights(tmp_path, raw_tiny, tokenizer):
    raw_tiny.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path))


def test_unknown_name():
    with pytest.raises(ModelLoadError, match="unknown model 'tiny-bert'.*tiny-llama"):
        load_model("tiny-bert")


@pytest.mark.parametrize("device", ["gpu", "tpu", "CPU", "cuda0", ""])
def test_bad_device_lists_allowed(device):
    with pytest.raises(
        ModelLoadError, match=f"unknown device {device!r}; allowed: cpu, cuda, auto or 'cuda:N'"
    ):
        load_model("tiny-llama", device=device)


@pytest.mark.parametrize("dtype", ["fp32", "float64", "half", "int8"])
def test_bad_dtype_lists_allowed(dtype):
    with pytest.raises(
        ModelLoadError, match=f"unknown dtype {dtype!r}; allowed: float32, bfloat16, float16"
    ):
        load_model("tiny-llama", dtype=dtype)


def test_bad_backend_lists_allowed():
    with pytest.raises(
        ModelLoadError, match="unknown backend 'tlens'; allowed: " + ", ".join(BACKENDS)
    ):
        load_model("tiny-llama", backend="tlens")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_gpu(device):
    with pytest.raises(
        ModelLoadError, match=f"device {device!r} asked for, but no CUDA GPU is available"
    ):
        load_model("tiny-llama", device=device)


def test_resolve_device_and_dtype():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    for name, dt in DTYPES.items():
        assert resolve_dtype(name) is dt
    assert resolve_dtype(torch.float16) is torch.float16


def test_bfloat16_tiny(tiny_models):
    model = load_model("tiny-llama", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.hf_model.parameters())
    toks = model.to_tokens(PROMPTS)
    logits = model.forward(toks)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    ref = tiny_models["tiny-llama"].forward(toks)
    # Same weights, lower precision: close but not equal.
    assert (logits.float() - ref).abs().max() < 0.1 * ref.abs().max()
