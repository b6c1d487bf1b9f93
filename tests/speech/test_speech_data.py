"""Speech data: WAV reading and resampling, a user's clips (YAML list or folder), espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from interp.core.errors import DatasetError
from interp.data.speech import (
    espeak_available,
    generate_speech,
    load_speech_files,
    read_wav,
    synthesize,
)

needs_espeak = pytest.mark.skipif(not espeak_available(),
                                  reason="espeak-ng is not installed (apt-get install -y espeak-ng)")


def _tone(path, seconds=0.5, sr=22050, freq=440.0, stereo=False):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    wavfile.write(path, sr, np.stack([x, x], axis=1) if stereo else x)


def test_read_wav_resamples_to_16k_mono(tmp_path):
    _tone(tmp_path / "a.wav", stereo=True)
    x = read_wav(tmp_path / "a.wav")
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 8000) <= 1  # 0.5 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 440) < 3  # the tone survives resampling
    assert 0.45 < np.abs(x).max() <= 0.51


def test_folder_of_wavs_with_transcripts(tmp_path):
    _tone(tmp_path / "b.wav")
    _tone(tmp_path / "a.wav")
    (tmp_path / "a.txt").write_text("hello there\n")
    (tmp_path / "b.txt").write_text("general kenobi")
    ds = load_speech_files(tmp_path)
    assert [u.text for u in ds] == ["hello there", "general kenobi"]
    assert ds.to_frame().columns.tolist()[:2] == ["utterance", "text"]
    (tmp_path / "c.wav").write_bytes((tmp_path / "a.wav").read_bytes())
    with pytest.raises(DatasetError, match="c.wav has no transcript: expected c.txt next to it"):
        load_speech_files(tmp_path)


def test_yaml_list_and_its_errors(tmp_path):
    _tone(tmp_path / "x.wav")
    (tmp_path / "x.txt").write_text("from a file")
    good = tmp_path / "clips.yaml"
    good.write_text("- {audio: x.wav, text: spoken words}\n- {audio: x.wav, text_file: x.txt}\n")
    assert [u.text for u in load_speech_files(good)] == ["spoken words", "from a file"]
    cases = {
        "- {audio: x.wav}\n": "needs 'audio' and exactly one of 'text' / 'text_file'",
        "- {audio: x.wav, text: a, speaker: b}\n": "unknown keys: speaker",
        "- {audio: missing.wav, text: a}\n": "missing.wav does not exist",
        "just text\n": "expected a non-empty YAML list",
        "- {audio: x.wav, text: '  '}\n": "empty transcript",
    }
    for body, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(body)
        with pytest.raises(DatasetError, match=message):
            load_speech_files(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        load_speech_files(tmp_path / "nowhere")


def test_clips_longer_than_one_window_are_refused(tmp_path):
    _tone(tmp_path / "long.wav", seconds=31, sr=8000)
    (tmp_path / "long.txt").write_text("long")
    with pytest.raises(DatasetError, match="clip is 31.0 s long; at most 30 s"):
        load_speech_files(tmp_path)


@needs_espeak
def test_espeak_sentences_are_seeded_and_cached(tmp_path):
    a = generate_speech(3, seed=4, cache_dir=tmp_path)
    b = generate_speech(3, seed=4, cache_dir=tmp_path)
    assert [(u.text, u.voice, u.speed) for u in a] == [(u.text, u.voice, u.speed) for u in b]
    assert len({u.text for u in a}) == 3
    for u in a:
        assert u.sample_rate == 16000 and 0.5 < u.duration < 10 and np.abs(u.audio).max() > 0.05
    assert len(list(tmp_path.glob("*.wav"))) == 3  # the second call read the cache


@needs_espeak
def test_unknown_voice_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="espeak-ng failed for voice 'xx-nowhere'.*espeak-ng --voices"):
        synthesize("hello", "xx-nowhere", 140, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="speed 20 out of range"):
        synthesize("hello", "en-us", 20, cache_dir=tmp_path)
