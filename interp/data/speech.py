"""Spoken sentences with reference transcripts: synthesised with espeak-ng, or a user's WAVs.

`generate_speech` speaks sentences from the Harvard sentence lists (IEEE 1969 phonetically
balanced sentences, public domain) with Debian's ``espeak-ng`` in a seeded choice of voices and
speeds, resamples them to 16 kHz mono and returns a `SpeechDataset` of `Utterance`s (waveform +
reference text). WAVs are synthesised at run time into a cache directory
(``cache_root()/speech/espeak``, keyed by text, voice, speed and espeak-ng version), never
committed. `load_speech_files` reads a user's recordings instead: a YAML list of
``{audio: path.wav, text: "..."}`` entries (paths relative to the YAML) or a folder where each
``x.wav`` has its transcript in ``x.txt``.

    ds = generate_speech(4, seed=0)                  # needs espeak-ng on PATH
    ds[0].text, ds[0].audio.shape, ds[0].sample_rate
    ds = load_speech_files("my_clips/")              # x.wav + x.txt pairs

Choices: voices default to espeak-ng's own English voices (MBROLA voices need extra packages);
speeds of 120 and 135 words per minute, where Whisper tiny.en transcribes espeak-ng speech
best (at 150 and with the '+m3' variant its word error rate roughly doubles);
WAV decoding and resampling use scipy (`wavfile`, polyphase `resample_poly`), so there is no
audio dependency beyond scipy.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.core.errors import DatasetError
from interp.data.progress import Progress, ticker

SAMPLE_RATE = 16_000
MAX_SECONDS = 30.0  # one Whisper window

# Harvard sentences (IEEE Recommended Practice for Speech Quality Measurements, 1969), lists 1-4.
HARVARD_SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
)
DEFAULT_VOICES = ("en-gb", "en-gb-x-rp", "en-us", "en-us+f3")
DEFAULT_SPEEDS = (120, 135)


@dataclass(frozen=True)
class Utterance:
    """One spoken clip: a 16 kHz mono float32 waveform in [-1, 1] and its reference text."""

    id: str
    audio: np.ndarray = field(repr=False)
    text: str
    voice: str | None = None
    speed: int | None = None
    source: str = "espeak-ng"
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass(frozen=True)
class SpeechDataset:
    """An ordered set of utterances with its provenance (generator + params, or files)."""

    utterances: tuple[Utterance, ...]
    name: str
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, i: int) -> Utterance:
        return self.utterances[i]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"utterance": u.id, "text": u.text, "voice": u.voice, "speed": u.speed,
                 "duration_s": round(u.duration, 3), "source": u.source}
                for u in self.utterances
            ]
        )


# --- espeak-ng ------------------------------------------------------------------------------


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DatasetError(
            "espeak-ng is not installed (needed to synthesise speech); on Debian/Ubuntu: "
            "apt-get install -y espeak-ng (`make setup` does it when run as root), or point "
            "data.source at your own WAV files"
        )
    return exe


def _espeak_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or "unknown"


def speech_cache_dir() -> Path:
    from interp.core.paths import cache_root

    return cache_root() / "speech" / "espeak"


def synthesize(text: str, voice: str = "en-us", speed: int = 140, *, cache_dir: Path | None = None) -> np.ndarray:
    """`text` spoken by espeak-ng (`voice`, `speed` in words per minute) as 16 kHz float32."""
    if not text.strip():
        raise DatasetError("cannot synthesise an empty sentence")
    if not 80 <= speed <= 450:
        raise DatasetError(f"espeak-ng speed {speed} out of range; allowed: 80..450 words per minute")
    exe = _espeak()
    cache_dir = Path(cache_dir) if cache_dir is not None else speech_cache_dir()
    key = hashlib.sha256(f"{_espeak_version(exe)}|{voice}|{speed}|{text}".encode()).hexdigest()[:24]
    path = cache_dir / f"{key}.wav"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".wav")
        os.close(fd)  # espeak-ng writes the file by name
        try:
            proc = subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", tmp, text],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                msg = (proc.stderr or proc.stdout).strip()
                raise DatasetError(f"espeak-ng failed for voice {voice!r}: {msg}; list voices with "
                                   "`espeak-ng --voices=en` (variants: 'en-us+f3', 'en-gb+m3', ...)")
            Path(tmp).replace(path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return read_wav(path)


def generate_speech(
    n: int,
    *,
    seed: int = 0,
    voices: Sequence[str] = DEFAULT_VOICES,
    speeds: Sequence[int] = DEFAULT_SPEEDS,
    sentences: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> SpeechDataset:
    """`n` sentences spoken by espeak-ng: seeded choice of distinct sentences, voices, speeds."""
    if n < 1:
        raise DatasetError(f"n must be >= 1, got {n}")
    pool = list(sentences) if sentences is not None else list(HARVARD_SENTENCES)
    if not pool or not voices or not speeds:
        raise DatasetError("sentences, voices and speeds must each be non-empty")
    rng = random.Random(seed)
    order = rng.sample(range(len(pool)), len(pool))
    utts = []
    tick = ticker(progress, n)
    for i in range(n):
        text = pool[order[i % len(pool)]]
        voice, speed = rng.choice(list(voices)), int(rng.choice(list(speeds)))
        audio = synthesize(text, voice, speed, cache_dir=cache_dir)
        utts.append(Utterance(f"espeak-{i:03d}", audio, text, voice=voice, speed=speed))
        tick(i + 1)
    return SpeechDataset(tuple(utts), "espeak-ng",
                         {"generator": "espeak-ng", "n": n, "seed": seed, "voices": list(voices),
                          "speeds": list(speeds), "espeak_version": _espeak_version(_espeak())})


# --- WAV files ------------------------------------------------------------------------------


def read_wav(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file as mono float32 at `sample_rate` (channels averaged, polyphase resampling)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    path = Path(path)
    try:
        sr, data = wavfile.read(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read WAV: {e}", file=str(path)) from None
    if data.dtype.kind == "i":
        x = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    elif data.dtype.kind == "u":  # 8-bit WAV is unsigned, centred on 128
        x = (data.astype(np.float32) - 128.0) / 128.0
    else:
        x = data.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise DatasetError("the WAV file holds no samples", file=str(path))
    if sr != sample_rate:
        g = math.gcd(int(sr), sample_rate)
        x = resample_poly(x, sample_rate // g, int(sr) // g).astype(np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _check_clip(audio: np.ndarray, where: str) -> None:
    seconds = len(audio) / SAMPLE_RATE
    if seconds > MAX_SECONDS:
        raise DatasetError(f"{where}: clip is {seconds:.1f} s long; "
                           f"at most {MAX_SECONDS:.0f} s (one Whisper window) is allowed")


def load_speech_files(path: str | Path) -> SpeechDataset:
    """A user's clips: a YAML list of ``{audio, text}`` (or ``{audio, text_file}``) entries, or a
    directory where every ``x.wav`` has its transcript in ``x.txt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        entries = _folder_entries(path)
    elif path.is_file():
        entries = _yaml_entries(path)
    else:
        raise DatasetError(f"speech data path {path} does not exist (a YAML list or a folder of .wav + .txt)")
    utts = []
    for i, (wav, text, where) in enumerate(entries):
        if not wav.is_file():
            raise DatasetError(f"{where}: audio file {wav} does not exist")
        if not text.strip():
            raise DatasetError(f"{where}: empty transcript")
        audio = read_wav(wav)
        _check_clip(audio, where)
        utts.append(Utterance(f"{i:03d}-{wav.stem}", audio, text.strip(), source=str(wav)))
    return SpeechDataset(tuple(utts), path.stem, {"files": str(path.resolve()), "n": len(utts)})


def _folder_entries(folder: Path) -> list[tuple[Path, str, str]]:
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
    if not wavs:
        raise DatasetError(f"folder {folder} holds no .wav files (expected x.wav with its transcript in x.txt)")
    out = []
    for wav in wavs:
        txt = wav.with_suffix(".txt")
        if not txt.is_file():
            raise DatasetError(f"{wav.name} has no transcript: expected {txt.name} next to it", file=str(folder))
        out.append((wav, txt.read_text(encoding="utf-8"), str(wav)))
    return out


def _yaml_entries(file: Path) -> list[tuple[Path, str, str]]:
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DatasetError(f"invalid YAML: {e}", file=str(file)) from None
    if isinstance(data, dict) and "utterances" in data:
        data = data["utterances"]
    if not isinstance(data, list) or not data:
        raise DatasetError("expected a non-empty YAML list of {audio: <file.wav>, text: <transcript>} entries",
                           file=str(file))
    out = []
    for i, item in enumerate(data):
        where = f"{file}: entry {i}"
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: expected a mapping with keys audio and text, got {type(item).__name__}")
        unknown = sorted(set(item) - {"audio", "text", "text_file"})
        if unknown or "audio" not in item or ("text" in item) == ("text_file" in item):
            raise DatasetError(f"{where}: needs 'audio' and exactly one of 'text' / 'text_file'"
                               + (f"; unknown keys: {', '.join(unknown)}" if unknown else ""))
        wav = (file.parent / str(item["audio"])).resolve()
        if "text_file" in item:
            tf = (file.parent / str(item["text_file"])).resolve()
            if not tf.is_file():
                raise DatasetError(f"{where}: text_file {tf} does not exist")
            text = tf.read_text(encoding="utf-8")
        else:
            text = str(item["text"])
        out.append((wav, text, where))
    return out


__all__ = [
    "DEFAULT_SPEEDS",
    "DEFAULT_VOICES",
    "HARVARD_SENTENCES",
    "SAMPLE_RATE",
    "SpeechDataset",
    "Utterance",
    "espeak_available",
    "generate_speech",
    "load_speech_files",
    "read_wav",
    "synthesize",
]
