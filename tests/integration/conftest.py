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


def _fresh_raw_hf(path):
    """A fresh raw HF model from a bundled model's fp32 cache dir (never the bridge-wrapped
    `hf_model`): the independent reference of the integration tests."""
    from transformers import AutoModelForCausalLM

    raw = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation="eager"
    )
    for p in raw.parameters():
        p.requires_grad_(False)
    return raw.eval()


@pytest.fixture(scope="module")
def smollm2_raw(tokenizer):
    from interp.models import smollm2

    return _fresh_raw_hf(smollm2.cached_dir()[0])


@pytest.fixture(scope="session")
def fresh_raw_hf():
    """`fresh_raw_hf(cache_dir)`: the raw reference model of any bundled text model."""
    return _fresh_raw_hf


@pytest.fixture(scope="module")
def smollm2_ref(smollm2_raw, raw_reference):
    return raw_reference(smollm2_raw)
