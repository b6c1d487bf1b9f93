"""Metrics: values against hand computations, `columns_for` equivalence, the registry."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import InterpError
from interp.core.metrics import METRICS, Metric, columns_for, get_metric, normalise


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 50, generator=g) * 3


@pytest.fixture
def ids():
    return torch.tensor([3, 10, 0, 49, 7]), torch.tensor([4, 11, 49, 0, 8])


def test_registered_metrics():
    assert {"logit_diff", "prob", "prob_diff"} <= set(METRICS)
    for name in ("logit_diff", "prob", "prob_diff"):
        m = get_metric(name)
        assert isinstance(m, Metric) and m.name == name and m.description
    assert not get_metric("logit_diff").full_vocab
    assert get_metric("prob").full_vocab and get_metric("prob_diff").full_vocab


def test_unknown_metric_lists_allowed():
    with pytest.raises(
        InterpError, match=r"unknown metric 'logitdiff'; allowed: .*logit_diff.*prob.*prob_diff"
    ):
        get_metric("logitdiff")


def test_values(logits, ids):
    a, d = ids
    r = torch.arange(5)
    p = logits.softmax(-1)
    torch.testing.assert_close(
        get_metric("logit_diff").fn(logits, a, d), logits[r, a] - logits[r, d]
    )
    torch.testing.assert_close(get_metric("prob").fn(logits, a, d), p[r, a])
    torch.testing.assert_close(get_metric("prob_diff").fn(logits, a, d), p[r, a] - p[r, d])


def test_prob_metrics_are_float32_on_half_logits(logits, ids):
    a, d = ids
    out = get_metric("prob").fn(logits.to(torch.bfloat16), a, d)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ["logit_diff", "prob", "prob_diff"])
def test_columns_for_matches_full_logits(logits, ids, name):
    m = get_metric(name)
    a, d = ids
    full = m.fn(logits, a, d)
    cols, ca, cd = columns_for(m, a, d)
    if m.full_vocab:
        assert cols is None and ca is a and cd is d
        restricted = full
    else:
        assert cols.shape == (10,)
        restricted = m.fn(logits[:, cols], ca, cd)
        # Every prompt reads its own answer/distractor from the restricted columns.
        assert torch.equal(logits[:, cols][torch.arange(5), ca], logits[torch.arange(5), a])
    torch.testing.assert_close(restricted, full, rtol=0, atol=0)


def test_columns_for_with_shared_ids(logits):
    """Prompts sharing an answer id still each get the right columns."""
    m = get_metric("logit_diff")
    a, d = torch.tensor([3, 3, 4, 4, 3]), torch.tensor([4, 4, 3, 3, 2])
    cols, ca, cd = columns_for(m, a, d)
    torch.testing.assert_close(m.fn(logits[:, cols], ca, cd), m.fn(logits, a, d))


def test_normalise():
    assert normalise(5.0, clean=5.0, corrupt=1.0) == 1.0
    assert normalise(1.0, clean=5.0, corrupt=1.0) == 0.0
    assert normalise(3.0, clean=5.0, corrupt=1.0) == 0.5
    torch.testing.assert_close(
        normalise(torch.tensor([1.0, 2.0]), -1.0, 3.0), torch.tensor([0.5, 0.25])
    )
    with pytest.raises(InterpError, match="clean and corrupt metrics are equal"):
        normalise(1.0, clean=2.0, corrupt=2.0)
