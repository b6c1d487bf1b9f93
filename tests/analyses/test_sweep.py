"""The sweep engine itself: grouping, chunking, NaN for skipped variants, progress, averaging.
(That each analysis built on it gives the one-forward-per-site numbers is tested with the
analysis: test_patching, test_path_patching, the knowledge and MCQ tests.)"""

from __future__ import annotations

import pytest
import torch

from interp.analyses.sweep import BatchSweep, over_batches, prompt_mean, resume, sweep
from interp.core.errors import DatasetError, InterpError
from interp.core.metrics import Targets, get_metric, readout
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs


@pytest.fixture(scope="module")
def pb(tokenizer):
    return tokenize_pairs(generate_ioi(6, tokenizer, seed=3), tokenizer).largest_batch()


def _setup(model, pb):
    toks = pb.clean.to(model.device)
    inputs = model.capture_block_inputs(toks)
    rd = readout(get_metric("logit_diff"), Targets(pb.answer_ids, pb.distractor_ids).to(model.device))
    return toks, inputs, rd


def test_unpatched_variants_equal_the_plain_forward(tiny_model, pb):
    """Variants without hooks, at every layer and in chunks of 2: each is the clean run."""
    toks, inputs, rd = _setup(tiny_model, pb)
    n, L = len(pb), tiny_model.spec.n_layers
    calls = []

    def run_chunk(layer, start, chunk):
        calls.append((layer, start, list(chunk)))
        return resume(tiny_model, inputs, layer, len(chunk), [], start=start)

    keys = [(layer, 0) for layer in range(L) for _ in range(3)]
    keys[1] = None  # no effect to measure: NaN, never run
    seen = []
    out = sweep(tiny_model, n, keys, run_chunk, rd, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    expect = rd.score_vocab(tiny_model.forward(toks)[:, -1]).cpu()
    assert out.shape == (len(keys), n)
    assert torch.isnan(out[1]).all()
    for i in (0, *range(2, len(keys))):
        torch.testing.assert_close(out[i], expect, atol=1e-4, rtol=1e-4)
    assert all(len(c) <= 2 for _, _, c in calls)
    assert [layer for layer, _, _ in calls] == sorted(layer for layer, _, _ in calls)  # grouped by layer
    assert seen[0] == (1, len(keys))  # from the start: the skipped variant counts as done
    assert seen[1][0] == 1 + 2 and seen[-1] == (len(keys), len(keys))


def test_batch_size_must_be_positive(tiny_model, pb):
    _, _, rd = _setup(tiny_model, pb)
    with pytest.raises(InterpError, match="batch_size must be an integer >= 1 or .auto., got 0"):
        sweep(tiny_model, len(pb), [(0, 0)], lambda *a: None, rd, batch_size=0)


def test_over_batches_progress_and_mean(pb):
    batches = [pb, pb]
    n = len(pb)

    def per_batch(b, prog):
        prog(3, 3)
        return torch.ones(3, n) * 2, torch.ones(n), torch.zeros(n)

    seen = []
    results = list(over_batches(batches, per_batch, 3, lambda d, t: seen.append((d, t))))
    assert seen == [(3, 6), (6, 6)]
    assert all(isinstance(r, BatchSweep) for r in results)
    vals, clean, corrupt, count = prompt_mean(iter(results))
    torch.testing.assert_close(vals, torch.full((3,), 2.0))
    assert (clean, corrupt, count) == (1.0, 0.0, 2 * n)


def test_mean_of_nothing_is_a_dataset_error():
    with pytest.raises(DatasetError, match="the dataset is empty"):
        prompt_mean(iter([]))
