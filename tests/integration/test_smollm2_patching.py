"""Head patching on the real model equals the independent raw-PyTorch loop.

`sweep_sites` over all 270 heads (4 prompts of one IOI template), compared with one full
forward of a fresh raw HF model per head, overwriting that head's slice of `o_proj`'s input,
for ~20 heads: layers 0, 14 and 29, the strongest heads of the sweep, and a seeded sample.
Then a few heads and positions in the noising direction, and hooks after a failing analysis."""

from __future__ import annotations

import random

import pytest
import torch

from interp.analyses.patching import baseline_metrics, sweep_sites
from interp.core.metrics import Metric, get_metric
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs

pytestmark = pytest.mark.integration
TOL = 1e-4


@pytest.fixture(scope="module")
def pb(tokenizer):
    b = tokenize_pairs(generate_ioi(4, tokenizer, seed=0, templates=[0]), tokenizer).largest_batch()
    assert len(b) == 4
    return b


@pytest.fixture(scope="module")
def all_heads(smollm2, pb):
    L, H = smollm2.spec.n_layers, smollm2.spec.n_heads
    sites = [Site("z", layer, head=h) for layer in range(L) for h in range(H)]
    return sites, sweep_sites(smollm2, pb, sites, direction="denoising")


def _raw(ref, pb, sites, direction):
    base, source = (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)
    cache: dict = {}
    return torch.stack(
        [
            ref.patch_metric(
                base,
                source,
                pb.answer_ids,
                pb.distractor_ids,
                str(s.component),
                s.layer,
                s.head,
                s.position,
                cache,
            )
            for s in sites
        ]
    )


def test_model_prefers_the_answer(smollm2, pb):
    clean, corrupt = baseline_metrics(smollm2, pb, get_metric("logit_diff"))
    assert (clean > 0).all()
    assert (clean.mean() - corrupt.mean()).abs() > 1.0


def test_all_heads_sweep_equals_raw_loop_on_a_sample(
    smollm2, smollm2_ref, pb, all_heads, assert_clean
):
    sites, got = all_heads
    assert got.shape == (270, 4) and torch.isfinite(got).all()
    _, corrupt = baseline_metrics(smollm2, pb, get_metric("logit_diff"))
    effect = (got - corrupt).mean(1).abs()
    strongest = effect.argsort(descending=True)[:6].tolist()
    pick = {0, 4, 8, 14 * 9 + 0, 14 * 9 + 5, 29 * 9 + 3, 29 * 9 + 8, *strongest}
    rng = random.Random(0)
    while len(pick) < 20:
        pick.add(rng.randrange(len(sites)))
    idx = sorted(pick)
    expected = _raw(smollm2_ref, pb, [sites[i] for i in idx], "denoising")
    err = (got[idx] - expected).abs().max().item()
    assert err <= TOL, f"max abs diff {err:.3g} over {len(idx)} heads"
    # The strongest heads do move the metric (the comparison is not between two no-ops).
    assert effect[strongest[0]] > 0.1
    assert_clean(smollm2)


def test_noising_and_positions_equal_raw_loop(smollm2, smollm2_ref, pb, all_heads):
    sites, got = all_heads
    _, corrupt = baseline_metrics(smollm2, pb, get_metric("logit_diff"))
    strongest = [
        sites[i] for i in (got - corrupt).mean(1).abs().argsort(descending=True)[:2].tolist()
    ]
    T = pb.clean.shape[1]
    some = [*strongest, Site("z", 0, head=1), Site("z", 29, head=6)]
    with_pos = [Site("z", s.layer, head=s.head, position=-1) for s in strongest]
    with_pos += [
        Site("z", 7, head=2, position=T - 3),
        Site("resid_pre", 12, position=3),
        Site("mlp_out", 20, position=-1),
    ]
    for direction, check in (("noising", some + with_pos), ("denoising", with_pos)):
        got_ = sweep_sites(smollm2, pb, check, direction=direction)
        err = (got_ - _raw(smollm2_ref, pb, check, direction)).abs().max().item()
        assert err <= TOL, f"{direction}: max abs diff {err:.3g}"


class Boom(RuntimeError):
    pass


def test_no_hooks_after_failing_analysis(smollm2, pb, assert_clean):
    toks = pb.clean[:1]
    before = smollm2.forward(toks)

    def fn(record):
        raise Boom("metric failed")

    with pytest.raises(Boom):
        sweep_sites(
            smollm2,
            pb,
            [Site("z", 29, head=h) for h in range(9)],
            metric=Metric("boom", fn, full_vocab=False, description="raises"),
        )
    assert_clean(smollm2)

    def explode(t, s):
        raise Boom("hook failed inside the forward")

    with pytest.raises(Boom):
        smollm2.run_with_hooks(
            toks, [(Site("mlp_out", 3), lambda t, s: t * 0), (Site("z", 20), explode)]
        )
    assert_clean(smollm2)
    assert torch.equal(smollm2.forward(toks), before)
