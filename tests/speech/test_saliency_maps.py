"""SPES-style occlusion and integrated gradients: a stub model whose tokens read known regions
of the spectrogram (the answer is known), the tiny random Whisper, and a real clip."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from interp.analyses.saliency import (
    integrated_gradients_saliency,
    pool_to_frames,
    silence_level,
    spes_cost,
    spes_saliency,
)


class RegionModel:
    """Token t's logits read only mel bins 0-3 of mel frames [10t, 10t + 10)."""

    spec = SimpleNamespace(mel_frames_per_audio_frame=2)
    device, dtype = torch.device("cpu"), torch.float32

    def forced_logits(self, feats, token_ids):
        cols = []
        for t in range(len(token_ids)):
            region = feats[:, 0:4, 10 * t : 10 * t + 10].mean((1, 2))
            cols.append(torch.stack([3 * region, -region, torch.zeros_like(region)], -1))
        return torch.stack(cols, 1)  # (batch, token, vocab 3)

    def str_tokens(self, ids):
        return [f"t{i}" for i in ids]


@pytest.fixture(scope="module")
def stub_feats():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 8, 60, generator=g) + 1.0  # silence level = max - 2 < every value


def test_pooling_known_values():
    fine = torch.tensor([[[1.0, 2, 3, 4, 5], [0, 0, 9, 0, 1]]])  # (token 1, mel 2, mel_frame 5)
    torch.testing.assert_close(pool_to_frames(fine, 2, "max"), torch.tensor([[2.0, 9, 5]]))
    torch.testing.assert_close(pool_to_frames(fine, 2, "mean"), torch.tensor([[3 / 4, 16 / 4, 6 / 2]]))
    with pytest.raises(ValueError, match="unknown pooling 'median'; allowed: max, mean"):
        pool_to_frames(fine, 2, "median")


def test_occlusion_finds_the_region_each_token_reads(stub_feats):
    res = spes_saliency(RegionModel(), stub_feats, [0, 1, 2], n_mel_frames=40, patch_frames=10, patch_mels=4)
    assert res.n_forwards == spes_cost(40, 8, mode="occlusion", patch_frames=10, patch_mels=4, n_masks=0) == 8
    assert res.maps.shape == (3, 20) and res.fine.shape == (3, 8, 40)
    for t in range(3):
        inside = res.maps[t, 5 * t : 5 * t + 5]
        assert (inside > 0).all()
        outside = torch.cat([res.maps[t, : 5 * t], res.maps[t, 5 * t + 5 :]])
        assert (outside == 0).all()
        assert (res.fine[t, 4:] == 0).all()  # the upper mel bins are never read
    df = res.to_frame()
    assert len(df) == 60 and set(df.method) == {"spes"}


def test_random_masks_point_at_the_same_regions(stub_feats):
    res = spes_saliency(RegionModel(), stub_feats, [0, 1, 2], n_mel_frames=40, mode="random", patch_frames=5,
                        patch_mels=4, n_masks=48, mask_prob=0.5, scales=(1, 2), seed=1)
    assert res.n_forwards == 48
    for t in range(3):
        assert 5 * t <= int(res.maps[t].argmax()) < 5 * t + 5


def test_integrated_gradients_on_the_stub(stub_feats):
    res = integrated_gradients_saliency(RegionModel(), stub_feats, [0, 1], n_mel_frames=40, steps=16)
    assert res.maps.shape == (2, 20) and res.method == "integrated_gradients"
    for t in range(2):
        assert (res.maps[t, 5 * t : 5 * t + 5] > 0).all()
        assert float(res.maps[t, 5 * (t + 1) :].abs().max()) == 0.0
    assert res.params["max_convergence_delta"] < 1e-3  # completeness: sum of attributions = f(x) - f(x0)


def test_on_the_tiny_whisper(tiny_speech, tiny_features):
    spes = spes_saliency(tiny_speech, tiny_features, [5, 6], n_mel_frames=30, patch_frames=10, patch_mels=4,
                         batch_size=3, pooling="mean")
    assert spes.maps.shape == (2, 15) and (spes.maps >= 0).all() and spes.maps.sum() > 0
    assert spes.n_forwards == 6 and spes.pooling == "mean"
    ig = integrated_gradients_saliency(tiny_speech, tiny_features, [5, 6], n_mel_frames=30, steps=2)
    assert ig.maps.shape == (2, 15) and torch.isfinite(ig.maps).all()
    assert silence_level(tiny_features) == pytest.approx(float(tiny_features.max()) - 2)


def test_bad_options(tiny_speech, tiny_features):
    with pytest.raises(ValueError, match="unknown SPES mode 'grid'; allowed: occlusion, random"):
        spes_saliency(tiny_speech, tiny_features, [5], n_mel_frames=30, mode="grid")
    with pytest.raises(ValueError, match="n_mel_frames must be in 1..40"):
        spes_saliency(tiny_speech, tiny_features, [5], n_mel_frames=41)
    with pytest.raises(ValueError, match="random masks need n_masks >= 2"):
        spes_saliency(tiny_speech, tiny_features, [5], n_mel_frames=30, mode="random", mask_prob=1.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        integrated_gradients_saliency(tiny_speech, tiny_features, [5], n_mel_frames=30, steps=0)


@pytest.mark.integration
def test_saliency_on_a_short_real_clip(whisper_model, known_clip):
    audio, _ = known_clip
    feats = whisper_model.features(audio)
    mel, frames = whisper_model.frames_of(len(audio))
    ids = whisper_model.transcribe(feats)[0].token_ids
    spes = spes_saliency(whisper_model, feats, ids, n_mel_frames=mel, patch_frames=50, patch_mels=80)
    assert spes.maps.shape == (len(ids), frames) and spes.n_forwards == -(-mel // 50)
    assert (spes.maps >= 0).all() and (spes.maps.amax(1) > 0).all()  # every token depends on some patch
    ig = integrated_gradients_saliency(whisper_model, feats, ids[:2], n_mel_frames=mel, steps=2)
    assert ig.maps.shape == (2, frames) and (ig.maps.amax(1) > 0).all()
