"""Direct logit attribution on the tiny models (RMSNorm Llama; GPT-2 with a biased LayerNorm).

Checked two ways: the parts sum to the model's actual logit difference, and single heads (and
one MLP) equal an independent computation on a fresh raw HF model: the o_proj/c_proj input at
the last position times that head's slice of the projection weight, through the final norm with
its scale frozen, onto W_U[answer] - W_U[distractor]."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.dla import direct_logit_attribution
from interp.analyses.results import DLAResult
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs


@pytest.fixture(scope="module")
def pairs(tokenizer):
    # Several templates, so several token lengths: results must land at the right prompt index.
    tp = tokenize_pairs(generate_ioi(6, tokenizer, seed=0), tokenizer)
    assert len(tp.by_length().batches) >= 2
    return tp


@pytest.fixture(scope="module")
def dla(tiny_model, pairs) -> DLAResult:
    return direct_logit_attribution(tiny_model, pairs)


@pytest.fixture(scope="module")
def ref(raw_tiny, raw_reference):
    return raw_reference(raw_tiny)


def _prompts(pairs):
    """(dataset index, tokens (1, T), answer (1,), distractor (1,)) per prompt."""
    out = []
    for b in pairs.batches:
        for j, i in enumerate(b.indices):
            out.append(
                (i, b.clean[j : j + 1], b.answer_ids[j : j + 1], b.distractor_ids[j : j + 1])
            )
    return sorted(out, key=lambda t: t[0])


def test_labels_and_shapes(dla, tiny_model, pairs):
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    n_parts = 1 + L * (H + 3) + 2  # embed, per layer heads + attn_bias + attn_remainder + MLP, two biases
    assert dla.contributions.shape == (pairs.n, n_parts)
    assert len(dla.labels) == len(dla.kinds) == len(dla.layers) == len(dla.heads) == n_parts
    assert dla.labels[:3] == ["embed", "L0H0", "L0H1"]
    assert dla.labels[-2:] == ["final_norm_bias", "unembed_bias"]
    assert f"L{L - 1}.attn_bias" in dla.labels and f"MLP{L - 1}" in dla.labels
    assert f"L{L - 1}.attn_remainder" in dla.labels and dla.max_remainder < 1e-4
    assert dla.verdict == "exact" and dla.approximations == ("final norm scale frozen at the actual run",)
    assert dla.kinds.count("head") == L * H
    i = dla.labels.index("L2H3")
    assert (dla.kinds[i], dla.layers[i], dla.heads[i]) == ("head", 2, 3)


def test_contributions_sum_to_logit_diff(dla):
    total = dla.contributions.sum(1)
    err = (total - dla.logit_diff).abs()
    assert err.max().item() == pytest.approx(dla.max_abs_error, abs=1e-7)
    assert dla.max_abs_error <= 1e-4 * max(1.0, dla.logit_diff.abs().max().item())


def test_logit_diff_is_the_raw_models_per_prompt(dla, ref, pairs):
    """Every prompt's actual logit difference, with prompts of several lengths put back in
    dataset order."""
    for i, toks, a, d in _prompts(pairs):
        expected = ref.logit_diff(ref.last_logits(toks), a, d)
        assert dla.logit_diff[i].item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.parametrize(("layer", "head"), [(0, 0), (1, 3), (3, 2)])
def test_head_contribution_equals_raw_computation(dla, ref, pairs, layer, head):
    col = dla.labels.index(f"L{layer}H{head}")
    for i, toks, a, d in _prompts(pairs):
        expected = ref.head_dla(toks, a, d, layer, head)
        assert dla.contributions[i, col].item() == pytest.approx(expected.item(), abs=1e-4)
    assert dla.contributions[:, col].abs().max() > 1e-6  # not a vacuous zero


def test_mlp_contribution_equals_raw_computation(dla, ref, pairs):
    col = dla.labels.index("MLP2")
    for i, toks, a, d in _prompts(pairs)[:3]:
        part = ref.capture(toks, "mlp_out", 2)[:, -1]
        expected = ref.direct_effect(toks, a, d, part)
        assert dla.contributions[i, col].item() == pytest.approx(expected.item(), abs=1e-4)


def test_bias_terms(dla, tiny_name, ref, pairs):
    ln_bias = dla.contributions[:, dla.labels.index("final_norm_bias")]
    u_bias = dla.contributions[:, dla.labels.index("unembed_bias")]
    assert torch.all(u_bias == 0)  # neither tiny model has an unembedding bias
    attn_bias = dla.contributions[:, dla.labels.index("L1.attn_bias")]
    if tiny_name == "tiny-llama":  # RMSNorm, bias-free projections
        assert torch.all(ln_bias == 0)
        assert attn_bias.abs().max() < 1e-5
    else:  # LayerNorm bias . (W_U[a] - W_U[d])
        W_U = ref.hf.lm_head.weight
        for i, _, a, d in _prompts(pairs):
            expected = (ref.final_norm.bias * (W_U[a] - W_U[d])).sum()
            assert ln_bias[i].item() == pytest.approx(expected.item(), abs=1e-5)


def test_frames(dla, tiny_model, pairs):
    df = dla.to_frame()
    assert list(df.columns) == ["label", "kind", "layer", "head", "contribution", "std"]
    assert len(df) == len(dla.labels)
    row = df[df.label == "L1H2"].iloc[0]
    assert (row.layer, row["head"]) == (1, 2)
    assert row.contribution == pytest.approx(
        dla.contributions[:, dla.labels.index("L1H2")].mean().item()
    )
    assert df[df.label == "embed"]["layer"].isna().all()

    long = dla.per_prompt_frame()
    assert list(long.columns) == ["prompt", "label", "contribution"]
    assert len(long) == pairs.n * len(dla.labels)

    m = dla.head_matrix(tiny_model.spec.n_layers, tiny_model.spec.n_heads)
    assert m.shape == (4, 4)
    assert m[3, 1].item() == pytest.approx(
        dla.contributions[:, dla.labels.index("L3H1")].mean().item()
    )


def test_dla_leaves_no_hooks(dla, tiny_model, assert_clean):
    assert_clean(tiny_model)


def test_empty_dataset_is_one_clear_error(tiny_model):
    from interp.core.errors import DatasetError
    from interp.data.pairs import TokenizedPairs

    with pytest.raises(DatasetError,
                       match="^direct logit attribution needs at least one prompt pair; the dataset is empty$"):
        direct_logit_attribution(tiny_model, TokenizedPairs([], 0))
