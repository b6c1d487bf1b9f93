"""The `retrieval_heads` experiment kind: config validation, and a run on the tiny model via the
CLI (a random model answers no needle, so the run must say so and skip the masking test)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from interp.cli import main
from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "experiments" / "retrieval_heads.yaml"


def _cfg(**sections):
    return {"kind": "retrieval_heads", "name": "ret_test", **sections}


def test_shipped_yaml_loads():
    cfg = load_config(YAML)
    assert cfg.kind == "retrieval_heads" and cfg.detection.scorer == "greedy"
    assert cfg.masking.modes == ("uniform", "zero", "mean") and cfg.masking.k == 10
    assert max(cfg.data.lengths) == 2000
    assert parse_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (_cfg(data={"depths": [0.5, 1.5]}), "data.depths[1]", "less than or equal to 1"),
        (_cfg(data={"lengths": [500, 500]}), "data.lengths", "more than once"),
        (_cfg(data={"lengths": []}), "data.lengths", "must not be empty"),
        (_cfg(data={"lenghts": [5]}), "data.lenghts", "did you mean 'lengths'"),
        (_cfg(data={"needles": "nowhere.jsonl"}), "data.needles", "does not exist"),
        (_cfg(detection={"scorer": "beam"}), "detection.scorer", "'greedy' or 'teacher_forced'"),
        (_cfg(masking={"modes": ["blur"]}), "masking.modes[0]", "'uniform'"),
        (_cfg(masking={"k": 0}), "masking.k", "an integer >= 1"),
        (_cfg(masking={"k": 2.5}), "masking.k", "'retrieval'"),
        (_cfg(masking={"k": "all"}), "masking.k", "'retrieval'"),
        (_cfg(masking={"seeds": []}), "masking.seeds", "must not be empty"),
    ],
)
def test_config_errors_name_the_yaml_path(data, path, message):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == path
    assert message in str(e.value)


def _tiny_yaml(tmp_path: Path, **masking) -> Path:
    cfg = yaml.safe_load(YAML.read_text())
    cfg["model"]["name"] = "tiny-llama"
    cfg["data"].update({"n_needles": 2, "lengths": [40, 80], "depths": [0.5], "max_new_tokens": 4})
    cfg["masking"].update({"lengths": [40], "n_needles": 2, "k": 2, **masking})
    path = tmp_path / "ret.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.integration  # a whole experiment run, end to end
def test_experiment_runs_on_the_tiny_model(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", str(_tiny_yaml(tmp_path)), "--runs-dir", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "retrieval heads (score > 0.1): 0 of 16 heads" in out
    assert "masking test skipped: no detection trial was answered correctly" in out
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "retrieval_heads"
    assert manifest["analyses_done"] == ["retrieval_scores"]
    tables = {p.stem for p in (run_dir / "tables").iterdir()}
    assert {"retrieval_scores", "retrieval_trials", "head_scores"} <= tables
    trials = pd.read_parquet(run_dir / "tables" / "retrieval_trials.parquet")
    assert len(trials) == 4 and set(trials["context_length"]) == {40, 80}
    scores = pd.read_parquet(run_dir / "tables" / "head_scores.parquet")
    assert set(scores["score"]) == {"retrieval.niah"} and len(scores) == 16
    assert "Masking test" in (run_dir / "report.html").read_text()


def test_k_beyond_half_the_heads_is_a_config_error(tmp_path, capsys):
    assert main(["run", str(_tiny_yaml(tmp_path, k=9)), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "masking.k" in err and "no matched random control" in err
