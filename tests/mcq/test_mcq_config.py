"""The `mcq_letters` experiment kind: config validation and a run on the tiny model via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from interp.cli import main
from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config, with_overrides

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "experiments" / "mcq_letters.yaml"


def _cfg(**sections):
    return {"kind": "mcq_letters", "name": "mcq_test", **sections}


def test_shipped_yaml_loads_with_defaults():
    cfg = load_config(YAML)
    assert cfg.kind == "mcq_letters"
    assert cfg.data.format == "content_letter" and cfg.data.random_labels
    assert cfg.analyses.compression.ranks == (0, 1, 2, 3, 4, 8, 16, 64)
    assert cfg.analyses.head_patching.positions == "last"
    assert parse_config(cfg.to_dict()) == cfg  # round trip
    small = with_overrides(cfg, {"analyses.compression.heads": "[[18, 6]]"})
    assert small.analyses.compression.heads == ((18, 6),)


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (_cfg(data={"formt": "letter"}), "data.formt", "did you mean 'format'"),
        (_cfg(data={"format": "cloze"}), "data.format", "'content_letter' or 'letter'"),
        (_cfg(data={"n_prompts": 0}), "data.n_prompts", ">= 1"),
        (_cfg(data={"items": "nowhere.jsonl"}), "data.items", "does not exist"),
        (_cfg(analyses={"compression": {"ranks": [1, 1]}}), "analyses.compression.ranks", "more than once"),
        (_cfg(analyses={"compression": {"ranks": []}}), "analyses.compression.ranks", "must not be empty"),
        (_cfg(analyses={"compression": {"ranks": [-1]}}), "analyses.compression.ranks[0]", ">= 0"),
        (_cfg(analyses={"compression": {"variants": ["q", "v"]}}), "analyses.compression.variants[1]", "'qk'"),
        (_cfg(analyses={"compression": {"heads": []}}), "analyses.compression.heads", "empty list"),
        (_cfg(analyses={"compression": {"key_positions": "some"}}), "analyses.compression.key_positions", "'labels'"),
        (_cfg(analyses={"dla": {"enabled": False}}), "analyses.compression.select_by", "needs analyses.dla.enabled"),
        (_cfg(analyses={"head_patching": {"enabled": False}, "compression": {"select_by": "patching"}}),
         "analyses.compression.select_by", "needs analyses.head_patching.enabled"),
        (_cfg(analyses={"head_patching": {"metric": "nope"}}), "analyses.head_patching.metric", "unknown metric"),
        (_cfg(analyses={"head_patching": {"positions": "first"}}), "analyses.head_patching.positions", "'last'"),
    ],
)
def test_config_errors_name_the_yaml_path(data, path, message):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == path
    assert message in str(e.value)


def test_explicit_heads_need_no_selection_source():
    cfg = parse_config(_cfg(analyses={"dla": {"enabled": False}, "compression": {"heads": [[1, 0]]}}))
    assert cfg.analyses.compression.heads == ((1, 0),)


def _tiny_yaml(tmp_path: Path, **compression) -> Path:
    cfg = yaml.safe_load(YAML.read_text())
    cfg["model"]["name"] = "tiny-llama"
    cfg["data"]["n_prompts"] = 4
    cfg["analyses"]["compression"].update({"ranks": [0, 1, 16], "n_heads": 2, **compression})
    path = tmp_path / "mcq.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.integration  # a whole experiment run, end to end
def test_experiment_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", str(_tiny_yaml(tmp_path)), "--runs-dir", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MCQ accuracy" in out and "q/k compression" in out
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "mcq_letters"
    tables = {p.stem for p in (run_dir / "tables").iterdir()}
    assert {"dataset", "accuracy", "dla", "head_patching_last_position", "head_scores", "letter_heads",
            "qk_subspaces", "qk_compression"} <= tables
    comp = pd.read_parquet(run_dir / "tables" / "qk_compression.parquet")
    assert set(comp["condition"]) == {"normal", "random", "random_with_normal_fit"}
    assert comp.loc[comp["rank"] == 16, "share_logit_diff"].eq(1.0).all()  # full rank = unchanged
    acc = pd.read_parquet(run_dir / "tables" / "accuracy.parquet")
    assert set(acc["set"]) == {"normal", "random", "letter_format"}
    figures = {p.name.split(".")[0] for p in (run_dir / "figures").iterdir()}
    assert {"dla_heads", "head_patching_last_position", "qk_compression_normal",
            "qk_compression_random"} <= figures
    assert (run_dir / "report.html").read_text().count("Rank vs metric") == 3


def test_a_head_outside_the_model_is_a_config_error(tmp_path, capsys):
    path = _tiny_yaml(tmp_path, heads=[[9, 0]])
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "analyses.compression.heads[0]" in err and "does not exist" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
