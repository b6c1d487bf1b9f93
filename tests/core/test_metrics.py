"""Metrics: values against hand computations, `columns_for` equivalence, the registry."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import InterpError
from interp.core.metrics import (
    METRICS,
    Metric,
    MetricRecord,
    Targets,
    columns_for,
    get_metric,
    letter_scores,
    metrics_reading,
    normalise,
    readout,
    register_metric,
)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 50, generator=g) * 3


@pytest.fixture
def ids():
    return torch.tensor([3, 10, 0, 49, 7]), torch.tensor([4, 11, 49, 0, 8])


def _score(name, logits, a, d):
    """The metric on full-vocabulary logits, through its readout."""
    return readout(get_metric(name), Targets(a, d)).score_vocab(logits)


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
    torch.testing.assert_close(_score("logit_diff", logits, a, d), logits[r, a] - logits[r, d])
    torch.testing.assert_close(_score("prob", logits, a, d), p[r, a])
    torch.testing.assert_close(_score("prob_diff", logits, a, d), p[r, a] - p[r, d])


def test_prob_metrics_are_float32_on_half_logits(logits, ids):
    a, d = ids
    out = _score("prob", logits.to(torch.bfloat16), a, d)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ["logit_diff", "prob", "prob_diff"])
def test_columns_for_matches_full_logits(logits, ids, name):
    m = get_metric(name)
    a, d = ids
    full = m(MetricRecord(logits, {"answer": a, "distractor": d}))
    cols, ca, cd = columns_for(m, a, d)
    if m.full_vocab:
        assert cols is None and ca is a and cd is d
        restricted = full
    else:
        assert cols.shape == (10,)
        restricted = m(MetricRecord(logits[:, cols], {"answer": ca, "distractor": cd}))
        # Every prompt reads its own answer/distractor from the restricted columns.
        assert torch.equal(logits[:, cols][torch.arange(5), ca], logits[torch.arange(5), a])
    torch.testing.assert_close(restricted, full, rtol=0, atol=0)


def test_columns_for_with_shared_ids(logits):
    """Prompts sharing an answer id still each get the right columns."""
    m = get_metric("logit_diff")
    a, d = torch.tensor([3, 3, 4, 4, 3]), torch.tensor([4, 4, 3, 3, 2])
    cols, ca, cd = columns_for(m, a, d)
    torch.testing.assert_close(m(MetricRecord(logits[:, cols], {"answer": ca, "distractor": cd})),
                               _score("logit_diff", logits, a, d))


def test_normalise():
    assert normalise(5.0, clean=5.0, corrupt=1.0) == 1.0
    assert normalise(1.0, clean=5.0, corrupt=1.0) == 0.0
    assert normalise(3.0, clean=5.0, corrupt=1.0) == 0.5
    torch.testing.assert_close(
        normalise(torch.tensor([1.0, 2.0]), -1.0, 3.0), torch.tensor([0.5, 0.25])
    )
    with pytest.raises(InterpError, match="clean and corrupt metrics are equal"):
        normalise(1.0, clean=2.0, corrupt=2.0)


def test_duplicate_name_raises():
    with pytest.raises(InterpError, match="metric 'logit_diff' is already registered"):
        register_metric("logit_diff", full_vocab=False, description="again")(lambda r: r.logits[:, 0])
    assert METRICS["logit_diff"].description == "logit(answer) - logit(distractor)"


def test_letter_metrics_against_hand(logits):
    g = torch.Generator().manual_seed(1)
    letters = torch.stack([torch.randperm(50, generator=g)[:4] for _ in range(5)])
    correct = torch.tensor([0, 3, 1, 2, 0])
    r = torch.arange(5)
    four = logits[r.unsqueeze(1), letters]
    right = four[r, correct]
    expect_ld = right - (four.sum(-1) - right) / 3
    expect_acc = (four.argmax(-1) == correct).float()
    targets = Targets(letters[r, correct], extra={"letters": letters})
    for name, expect in (("letter_logit_diff", expect_ld), ("letter_accuracy", expect_acc)):
        rd = readout(get_metric(name), targets)
        assert rd.columns is not None and rd.columns.numel() == letters.unique().numel()  # only the letters
        torch.testing.assert_close(rd.score(logits[:, rd.columns]), expect, rtol=0, atol=0)
    torch.testing.assert_close(letter_scores(four, correct)[0], expect_ld, rtol=0, atol=0)


def test_memory_context_metrics(logits, ids):
    m, c = ids
    r = torch.arange(5)
    targets = Targets(None, extra={"memory": m, "context": c})
    diff = readout(get_metric("memory_context_diff"), targets)
    torch.testing.assert_close(diff.score(logits[:, diff.columns]), logits[r, m] - logits[r, c], rtol=0, atol=0)
    p = logits.softmax(-1)
    torch.testing.assert_close(readout(get_metric("memory_prob"), targets).score_vocab(logits), p[r, m])
    torch.testing.assert_close(readout(get_metric("context_prob"), targets).score_vocab(logits), p[r, c])


def test_stacked_copies_read_their_own_prompt(logits, ids):
    a, d = ids
    rd = readout(get_metric("logit_diff"), Targets(a, d))
    two = torch.cat([logits, logits.flip(0)])[:, rd.columns]
    out = rd.score(two, copies=2)
    r = torch.arange(5)
    torch.testing.assert_close(out[:5], logits[r, a] - logits[r, d])
    flipped = logits.flip(0)
    torch.testing.assert_close(out[5:], flipped[r, a] - flipped[r, d])


def test_missing_target_is_one_clear_line(ids):
    a, d = ids
    with pytest.raises(InterpError, match=r"metric 'letter_logit_diff' reads 'letters', which this analysis "
                                          r"does not provide \(it provides answer, distractor\)"):
        readout(get_metric("letter_logit_diff"), Targets(a, d))


def test_metrics_reading_pairs_only():
    assert metrics_reading() == ["logit_diff", "prob", "prob_diff"]
    assert "letter_logit_diff" in metrics_reading(("answer", "distractor", "letters"))
