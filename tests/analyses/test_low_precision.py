"""A bfloat16 model's metrics come back in float32 and near the float32 model's: logits stay
in the model's dtype (its own arithmetic), the metric on them is computed in fp32."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.attribution import attribution_patching
from interp.analyses.patching import patch_heads, patch_residual
from interp.analyses.path_patching import Receiver, path_patch_senders
from interp.core.metrics import Targets, get_metric, readout


@pytest.fixture(scope="module")
def models(tokenizer):
    from interp.models.loading import load_model

    return load_model("tiny-llama"), load_model("tiny-llama", dtype="bfloat16")


@pytest.fixture(scope="module")
def pairs(models):
    from tests.conformance.support import make_pairs

    return make_pairs(models[0].spec.d_vocab, n=3, T=12)


def test_readout_scores_bf16_logits_in_fp32():
    logits = torch.tensor([[100.0, 99.6]], dtype=torch.bfloat16)  # bf16 spacing at 100 is 0.5
    rd = readout(get_metric("logit_diff"), Targets(torch.tensor([0]), torch.tensor([1])))
    got = rd.score(logits)
    assert got.dtype == torch.float32
    assert got.item() == float(logits[0, 0].float() - logits[0, 1].float())


@pytest.mark.parametrize("analysis", ["heads", "residual", "path", "atp"])
def test_bf16_metrics_are_fp32_and_near(models, pairs, analysis):
    m32, m16 = models
    pb = pairs.batches[0]
    run = {
        "heads": lambda m: patch_heads(m, pairs),
        "residual": lambda m: patch_residual(m, pairs),
        "path": lambda m: path_patch_senders(m, pb, [(0, 0), (0, 1), (1, 2)], [Receiver("logits")]),
        "atp": lambda m: attribution_patching(m, pairs).results["z"],
    }[analysis]
    a, b = run(m32), run(m16)
    va, vb = (a, b) if isinstance(a, torch.Tensor) else (a.values, b.values)
    assert vb.dtype == torch.float32 and vb.device.type == "cpu"
    scale = float(va.abs().max())
    assert float((va - vb).abs().max()) <= 0.05 * scale, (va, vb)
    if not isinstance(a, torch.Tensor):
        assert isinstance(b.clean_metric, float) and abs(a.clean_metric - b.clean_metric) <= 0.05 * scale
