"""Attribution patching: exact where the metric is linear in the site, close to exact patching
elsewhere on a tiny model, and the QK-fix maps."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.attribution import agreement, attribution_patching
from interp.analyses.patching import patch_heads, sweep_sites
from interp.core.errors import InterpError
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models import load_model


@pytest.fixture(scope="module")
def linear_tail_model():
    """tiny-llama whose final RMSNorm has a huge epsilon: its scale is then a constant, so the
    metric is exactly linear in the last layer's MLP output (which feeds only the norm)."""
    model = load_model("tiny-llama")
    norm = model._final_norm_module()
    norm.variance_epsilon = 1e10
    return model


def test_exact_on_a_linear_site(linear_tail_model):
    model = linear_tail_model
    pairs = tokenize_pairs(generate_ioi(4, model.tokenizer, seed=2, templates=[0]), model.tokenizer)
    pb = pairs.largest_batch()
    res = attribution_patching(model, pairs, residual=False).results["mlp"]
    last = model.spec.n_layers - 1
    exact = sweep_sites(model, pb, [Site("mlp_out", layer=last)]).mean(1)
    assert torch.allclose(res.values[last], exact[0], rtol=1e-4, atol=1e-9)
    # and the effect is not trivially zero
    assert abs(float(res.values[last]) - res.corrupt_metric) > 1e-3 * abs(res.clean_metric - res.corrupt_metric)


def test_agrees_with_exact_head_patching():
    model = load_model("tiny-llama")
    pairs = tokenize_pairs(generate_ioi(6, model.tokenizer, seed=0, templates=[0, 3]), model.tokenizer)
    atp = attribution_patching(model, pairs, qk_fix=True)
    exact = patch_heads(model, pairs)
    agree = agreement(atp.results["z"], exact, k=5)
    assert agree["spearman"] > 0.8 and agree["top5_overlap"] >= 0.6
    assert atp.n_backward == len(pairs.by_length().batches) + 1
    L, H = model.spec.n_layers, model.spec.n_heads
    for key in ("q", "k"):
        assert atp.results[key].values.shape == (L, H)
        assert torch.isfinite(atp.results[key].values).all()
    resid = atp.results["residual"]
    assert resid.axes == ("component", "layer", "position") and resid.token_labels is not None


def test_agreement_shape_mismatch():
    model = load_model("tiny-llama")
    pairs = tokenize_pairs(generate_ioi(2, model.tokenizer, seed=0, templates=[0]), model.tokenizer)
    atp = attribution_patching(model, pairs, residual=False)
    with pytest.raises(InterpError, match="shapes differ"):
        agreement(atp.results["mlp"], atp.results["z"])
