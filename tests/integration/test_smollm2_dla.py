"""Direct logit attribution on the real model: the parts sum to the logit difference, and
single heads equal the independent raw-HF computation."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.dla import direct_logit_attribution
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pairs(tokenizer):
    return tokenize_pairs(generate_ioi(8, tokenizer, seed=0), tokenizer)


@pytest.fixture(scope="module")
def dla(smollm2, pairs):
    return direct_logit_attribution(smollm2, pairs)


def test_dla_sums_to_logit_diff(dla, smollm2_raw, pairs, assert_clean, smollm2):
    assert dla.contributions.shape == (8, 1 + 30 * (9 + 3) + 2)  # heads, attn_bias, attn_remainder, MLP per layer
    rel = (dla.contributions.sum(1) - dla.logit_diff).abs() / dla.logit_diff.abs().clamp_min(1e-6)
    assert rel.max().item() <= 1e-3, f"max relative error {rel.max().item():.3g}"
    # logit_diff is the raw model's, prompt by prompt (several lengths, back in dataset order).
    for b in pairs.batches:
        with torch.no_grad():
            last = smollm2_raw(input_ids=b.clean).logits[:, -1]
        r = torch.arange(len(b))
        expected = last[r, b.answer_ids] - last[r, b.distractor_ids]
        torch.testing.assert_close(dla.logit_diff[b.indices], expected, rtol=0, atol=1e-4)
    assert (dla.logit_diff > 0).float().mean() >= 0.75  # the model mostly solves IOI
    assert_clean(smollm2)


@pytest.mark.parametrize(("layer", "head"), [(0, 0), (14, 4), (29, 8)])
def test_head_dla_equals_raw(dla, smollm2_ref, pairs, layer, head):
    col = dla.labels.index(f"L{layer}H{head}")
    b = pairs.batches[0]
    expected = smollm2_ref.head_dla(b.clean, b.answer_ids, b.distractor_ids, layer, head)
    torch.testing.assert_close(
        dla.contributions[b.indices, col], expected.float(), rtol=1e-4, atol=1e-4
    )


def test_top_heads_are_late(dla):
    """The largest direct effects in IOI come from heads in the later layers (name movers)."""
    m = dla.head_matrix(30, 9).abs()
    top_layer = int(m.flatten().argmax()) // 9
    assert top_layer >= 10
