"""The real shapes-llava (DINOv2 + trained projector + SmolLM2): it loads through `load_model`, its
greedy answers equal HF's own LLaVA forward, it needs the image, and the VHD analysis runs on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.models import llava

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not llava.weights_present(),
                                 reason=f"shapes-llava parts missing: {llava.INSTALL_HINT}")]


@pytest.fixture(scope="module")
def model():
    from interp.models.loading import load_model

    return load_model("shapes-llava", device="cpu")


@pytest.fixture(scope="module")
def held_out():
    from interp.data.shapes import generate_shapes

    # a seed the projector never saw (training used seed 0, its held-out set 1_000_003)
    return generate_shapes(24, seed=424242, qtypes=("colour", "shape"))


def test_loads_as_a_vision_language_model(model):
    from interp.models.vlm import VisionLanguageModel

    assert isinstance(model, VisionLanguageModel)
    s = model.spec
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_head, s.n_image_tokens, s.image_size) == (30, 9, 3, 64, 36, 84)
    assert model.weights_sha256 and len(model.weights_sha256) == 64


def test_first_token_matches_hf_llava_forward(model, held_out):
    it = held_out.items[0]
    ids = model.prompt(it.question)
    pv = model.pixel_values([it.image])
    with torch.no_grad():
        ref = model.hf_model(input_ids=torch.tensor([ids]), pixel_values=pv).logits[0, -1]
        feats = model.image_features(pv)
        emb, mask, pos = model.pack([model.embed(ids, feats[0])])
        ours, _ = model.forward_embeds(emb, mask, pos)
    torch.testing.assert_close(ours[0], ref, atol=1e-4, rtol=1e-4)


def test_answers_need_the_image(model, held_out):
    from interp.data.shapes import answer_correct

    qs = [it.question for it in held_out.items]
    with_img = model.generate(held_out.images(), qs, max_new_tokens=4)
    without = model.generate(None, qs, max_new_tokens=4, with_image=False)
    acc = np.mean([answer_correct(g.text, it) for g, it in zip(with_img, held_out.items, strict=True)])
    acc_txt = np.mean([answer_correct(g.text, it) for g, it in zip(without, held_out.items, strict=True)])
    assert acc >= 0.6 and acc - acc_txt >= 0.4, (acc, acc_txt)


def test_vhd_and_vhr_run_on_the_real_model(model):
    from interp.analyses.vhd import head_divergence, reinforce_heads
    from interp.data.shapes import generate_prior_probe

    probe = generate_prior_probe(3, seed=0)
    imgs, qs = probe.images(), [it.question for it in probe.items]
    res = head_divergence(model, imgs, qs, max_new_tokens=2)
    first = res.head_map("first")
    assert len(first) == 30 * 9 and (first["vhd"] > 0).all()
    vhr = reinforce_heads(model, imgs, qs, alpha=1.0, max_new_tokens=2)
    assert vhr.token_ids == res.token_ids  # alpha = 1 changes nothing
    assert set(vhr.selected[0]) == {1, *range(16, 30)}
    for heads in vhr.selected[0].values():
        assert 1 <= len(heads) <= 4  # above the median of 9 heads
