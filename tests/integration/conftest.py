"""Fixtures for the integration tier: the real bundled SmolLM2-135M-Instruct.

Module-scoped, so each test file loads the hooked model (and, where needed, a fresh raw
Hugging Face copy of the same weights as the independent reference) once.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def smollm2(tokenizer, assert_clean):
    from interp.models.loading import load_model

    model = load_model("smollm2-135m", device="cpu", dtype="float32")
    assert_clean.record_baseline(model)
    return model


@pytest.fixture(scope="module")
def smollm2_raw(tokenizer):
    """A fresh raw HF model from the same fp32 cache (never the bridge-wrapped `hf_model`)."""
    from transformers import AutoModelForCausalLM

    from interp.models import smollm2

    path, _ = smollm2.cached_dir()
    raw = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation="eager"
    )
    for p in raw.parameters():
        p.requires_grad_(False)
    return raw.eval()


@pytest.fixture(scope="module")
def smollm2_ref(smollm2_raw, raw_reference):
    return raw_reference(smollm2_raw)
