"""Fixtures for the vision-language tests: a tiny random LLaVA (no download) and shapes data."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_llava(tokenizer):
    from interp.models.llava import tiny_llava

    return tiny_llava(tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_items():
    from interp.data.shapes import generate_prior_probe, generate_shapes

    probe = generate_prior_probe(3, seed=0, image_size=28, captions=True).items
    return probe + generate_shapes(3, seed=1, image_size=28).items
