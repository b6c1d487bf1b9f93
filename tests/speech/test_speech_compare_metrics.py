"""Comparison metrics on cases with a known answer: WER, Pearson per token, capture share,
correlation tables, and deletion curves on a fake recogniser whose words live in known frames."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from interp.analyses.cross_attention import CrossAttentionResult
from interp.analyses.saliency import SaliencyResult
from interp.analyses.speech_compare import (
    capture_share,
    correlate,
    deletion_curves,
    fractions_grid,
    pearson_rows,
    ranking,
    utterance_scores,
    wer,
    word_edits,
)
from interp.models.backends.nnsight_seq2seq import Transcript


@pytest.mark.parametrize(("ref", "hyp", "want"), [
    ("the cat sat", "the cat sat", 0.0),
    ("the cat sat", "the cat sat down", 1 / 3),
    ("the cat sat", "the dog sat", 1 / 3),
    ("the cat sat", "cat", 2 / 3),
    ("Hello, world!", " hello world", 0.0),
    ("It's easy.", "its easy", 0.5),
    ("", "", 0.0),
    ("a b", "", 1.0),
])
def test_wer_known_values(ref, hyp, want):
    assert wer(ref, hyp) == pytest.approx(want)


def test_word_edits_is_levenshtein():
    assert word_edits(list("kitten"), list("sitting")) == 3
    assert word_edits([], ["a", "b"]) == 2


def test_pearson_rows_known_and_against_numpy():
    a = torch.tensor([[1.0, 2, 3, 4], [1, 0, 0, 1], [2, 2, 2, 2]])
    b = torch.tensor([[3.0, 5, 7, 9], [-1, 0, 0, -1], [1, 2, 3, 4]])
    r = pearson_rows(a, b)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0) and math.isnan(r[2])
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 30, generator=g), torch.rand(5, 30, generator=g)
    want = [np.corrcoef(x[i].numpy(), y[i].numpy())[0, 1] for i in range(5)]
    np.testing.assert_allclose(pearson_rows(x, y).numpy(), want, rtol=1e-5)


def test_capture_share_known_values():
    sal = torch.tensor([[0.0, 0, 5, 5, 0, 0, 0, 0, 0, 0]] * 3)
    ca = torch.tensor([[0, 0, 0.4, 0.3, 0, 0, 0, 0.1, 0, 0],  # CA's top 2 frames = the salient ones
                       [0.5, 0.4, 0, 0, 0, 0, 0, 0, 0, 0],  # CA looks elsewhere
                       [0, 0, 0.5, 0, 0, 0, 0, 0.4, 0, 0]])  # half of it
    share, rand = capture_share(ca, sal, top_fraction=0.2)  # k = 2 of 10 frames
    torch.testing.assert_close(share, torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(rand, torch.full((3,), 0.2))  # 2 random frames hold 2/10 of the mass
    with pytest.raises(ValueError, match=r"top_fraction must be in \(0, 1\]"):
        capture_share(ca, sal, 0.0)


def _ca(weights):
    L, H, T, _ = weights.shape
    return CrossAttentionResult(weights, weights.sum(-1), list(range(T)), [f"t{i}" for i in range(T)], "u")


def _sal(maps):
    T = maps.shape[0]
    return SaliencyResult("spes", maps, maps[:, None], list(range(T)), [f"t{i}" for i in range(T)], "max", 1, "u")


def test_correlate_known_answer():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 12, generator=g)  # 3 tokens x 12 frames
    w = torch.stack([
        torch.stack([s, s.flip(-1)]),  # layer 0: head 0 = saliency, head 1 = reversed
        torch.stack([2 * s + 1, 1 - s]),  # layer 1: an affine copy (r = 1) and a negated one (r = -1)
    ])
    res = correlate(_ca(w), _sal(s), last_layers=1, top_fraction=0.25)
    summ = res.summary().set_index("aggregation")
    assert summ.loc["L0.H0", "pearson"] == pytest.approx(1.0)
    assert summ.loc["L1.H0", "pearson"] == pytest.approx(1.0)
    assert summ.loc["L1.H1", "pearson"] == pytest.approx(-1.0)
    assert summ.loc["L1", "pearson"] == pytest.approx(1.0)  # mean of (2s + 1) and (1 - s) = (s + 2) / 2
    assert summ.loc["L0.H0", "capture_share"] == pytest.approx(1.0)
    assert summ.loc["L0.H0", "n_tokens"] == 3 and summ.loc["L0.H0", "kind"] == "head"
    assert len(res.to_frame()) == 3 * (4 + 2 + 2)
    with pytest.raises(ValueError, match="same audio window"):
        correlate(_ca(w[..., :10]), _sal(s))


def test_utterance_scores_weight_tokens_equally():
    maps = torch.tensor([[10.0, 0, 0, 0], [0, 1, 1, 0]])
    torch.testing.assert_close(utterance_scores(maps), torch.tensor([0.5, 0.25, 0.25, 0.0]))
    assert ranking(torch.tensor([0.1, 0.5, 0.5, 0.0])).tolist() == [1, 2, 0, 3]


class WordsInFrames:
    """A fake recogniser: word k lives in encoder frames [5k, 5k + 5) (mel frames [10k, 10k + 10))
    and is heard while fewer than 3 of its 5 frames are silent."""

    words = ("alpha", "beta", "gamma")
    spec = SimpleNamespace(mel_frames_per_audio_frame=2)

    def transcribe(self, x, max_new_tokens=None):
        silence = float(x.max()) - 2.0
        out = []
        for row in x:
            silent = [(row[:, 2 * f] <= silence).all().item() for f in range(15)]
            heard = [w for k, w in enumerate(self.words) if sum(silent[5 * k : 5 * k + 5]) < 3]
            out.append(Transcript([], " ".join(heard)))
        return out


def test_deletion_curves_known_answer():
    feats = torch.full((1, 4, 40), 2.0)
    feats[0, 0, 39] = 3.0  # silence level = 1.0, in the padding after the 30 audio mel frames
    blocked = torch.arange(15)  # word by word
    interleaved = torch.tensor([0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14])  # round robin
    res = deletion_curves(WordsInFrames(), feats, n_mel_frames=30,
                          rankings={"blocked": blocked, "interleaved": interleaved},
                          transcript="alpha beta gamma", reference="alpha beta gamma delta",
                          fractions=fractions_grid(0.2, 0.6), batch_size=3)
    df = res.to_frame()
    got = {m: g.sort_values("fraction").wer_transcript.round(4).tolist() for m, g in df.groupby("map")}
    assert got == {"blocked": [0.0, 0.3333, 0.3333, 0.6667], "interleaved": [0.0, 0.0, 0.0, 1.0]}
    assert df[df.fraction == 0].wer_reference.tolist() == [0.25, 0.25]
    auc = res.auc().set_index("map")
    assert auc.loc["blocked", "auc_wer_transcript"] == pytest.approx(1 / 3)  # 0.2 * (1/6 + 1/3 + 1/2) / 0.6
    assert auc.loc["interleaved", "auc_wer_transcript"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="is not a permutation of the 15 frames"):
        deletion_curves(WordsInFrames(), feats, n_mel_frames=30, rankings={"bad": torch.zeros(15, dtype=torch.long)},
                        transcript="a", reference="a")


def test_fraction_grid():
    grid = fractions_grid()
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and grid[1] == 0.05
    with pytest.raises(ValueError, match="need 0 < step <= max_fraction <= 1"):
        fractions_grid(0.5, 0.2)
