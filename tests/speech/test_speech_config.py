"""The speech_saliency experiment config: defaults, the shipped YAML, and errors that name the
YAML path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config, with_overrides

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**sections):
    return {"kind": "speech_saliency", "name": "sp", **sections}


def test_defaults_and_shipped_yaml():
    cfg = parse_config(_cfg())
    assert cfg.kind == "speech_saliency" and cfg.model.name == "whisper-tiny.en"
    assert cfg.analyses.spes.pooling == "max" and cfg.analyses.deletion.step == 0.05
    shipped = load_config(ROOT / "experiments" / "speech_saliency.yaml")
    assert shipped.to_dict() == parse_config(_cfg(name="speech_saliency", description=shipped.description)).to_dict()
    small = with_overrides(shipped, {"data.n_utterances": "1", "analyses.integrated_gradients.steps": "2"})
    assert small.data.n_utterances == 1 and small.analyses.integrated_gradients.steps == 2


@pytest.mark.parametrize(("data", "path", "message"), [
    (_cfg(model={"name": "smollm2-135m"}), "model.name",
     "'smollm2-135m' is not a speech-to-text model; allowed: whisper-tiny.en"),
    (_cfg(data={"source": "mic"}), "data.source", "allowed: 'espeak' or 'files'"),
    (_cfg(data={"source": "files"}), "data.path", "required when data.source is 'files'"),
    (_cfg(data={"source": "files", "path": ".", "n_utterances": 3}), "data.n_utterances",
     "only used when data.source is 'espeak'"),
    (_cfg(data={"speeds": [40]}), "data.speeds[0]", "must be >= 80; got 40"),
    (_cfg(analyses={"spes": {"pooling": "median"}}), "analyses.spes.pooling", "allowed: 'max' or 'mean'"),
    (_cfg(analyses={"spes": {"mode": "random", "n_masks": 1}}), "analyses.spes.n_masks", "at least 2 masks"),
    (_cfg(analyses={"spes": {"mask_prob": 1.5}}), "analyses.spes.mask_prob", "less than 1"),
    (_cfg(analyses={"deletion": {"step": 0.5, "max_fraction": 0.2}}), "analyses.deletion.step", "exceeds max_fraction"),
    (_cfg(analyses={"deletion": {"ca_aggregations": ["layer3"]}}), "analyses.deletion.ca_aggregations",
     "unknown aggregation 'layer3'; allowed: all, last<k>, L<layer>"),
    (_cfg(analyses={"integrated_gradients": {"stepz": 4}}), "analyses.integrated_gradients.stepz",
     "did you mean 'steps'"),
    (_cfg(analyses={"spes": {"enabled": False}, "integrated_gradients": {"enabled": False}}), "analyses",
     "enable spes or integrated_gradients"),
])
def test_errors_name_the_field(data, path, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.path == path, str(info.value)
    assert message in str(info.value)


def test_files_source_resolves_relative_to_the_yaml(tmp_path):
    (tmp_path / "clips").mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text("kind: speech_saliency\nname: mine\ndata: {source: files, path: clips}\n")
    assert load_config(f).data.path == (tmp_path / "clips").resolve()
    f.write_text("kind: speech_saliency\nname: mine\ndata: {source: files, path: nowhere}\n")
    with pytest.raises(ConfigError, match="nowhere does not exist"):
        load_config(f)
