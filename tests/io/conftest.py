"""Fixtures shared by the io tests."""

import pytest


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any model's weights fails the test: validate must use the tokenizer only."""
    import interp.io.runner as runner
    import interp.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("validate loaded model weights")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(runner, "load_model", refuse)
