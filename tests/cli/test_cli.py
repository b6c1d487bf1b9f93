"""The CLI end to end on a tiny model: run, validate, models, runs, and the promised errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from interp.cli import main

SMALL = {
    "name": "tiny_ioi",
    "model": {"name": "tiny-llama"},
    "data": {"source": "ioi", "n_prompts": 4, "templates": [0, 1], "position_n_prompts": 2},
    "analyses": {"residual_patching": {"components": ["resid_pre", "mlp_out"]}},
}


def _write(tmp_path: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.integration  # a whole experiment run, end to end
def test_run_writes_a_complete_run(tmp_path, capsys):
    cfg = _write(tmp_path, SMALL)
    runs = tmp_path / "runs"
    assert main(["run", str(cfg), "--runs-dir", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "top heads by patching" in out and "report:" in out
    (run_dir,) = list(runs.iterdir())
    assert run_dir.name.startswith("tiny_ioi-")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config"]["data"]["n_prompts"] == 4
    assert manifest["model_id"] == "tiny-llama" and len(manifest["weights_sha256"]) == 64
    assert manifest["seed"] == 0 and "torch" in manifest["versions"]
    assert manifest["analyses_done"] == ["accuracy", "head_patching", "residual_patching", "dla"]
    tables = {p.stem for p in (run_dir / "tables").glob("*.parquet")}
    assert {"dataset", "accuracy", "head_patching", "residual_patching", "dla"} <= tables
    assert (run_dir / "figures" / "head_patching.html").is_file()
    report = (run_dir / "report.html").read_text()
    assert "Head patching" in report and "<script src=\"http" not in report


def test_head_patterns_feed_the_atlas(tmp_path, capsys):
    import pandas as pd

    from interp.io.atlas import build_atlas
    from interp.io.runstore import RunStore

    cfg = {**SMALL, "analyses": {**SMALL["analyses"], "head_patching": {"enabled": False},
                                 "residual_patching": {"enabled": False},
                                 "head_patterns": {"enabled": True, "n_sequences": 3, "seq_len": 6}}}
    runs = tmp_path / "runs"
    assert main(["run", str(_write(tmp_path, cfg)), "--runs-dir", str(runs), "--quiet"]) == 0
    assert "head pattern scores (top 3): previous_token:" in capsys.readouterr().out
    (run_dir,) = list(runs.iterdir())
    assert json.loads((run_dir / "manifest.json").read_text())["analyses_done"][-1] == "head_patterns"
    scores = pd.read_parquet(run_dir / "tables" / "head_scores.parquet")
    assert set(scores["score"]) == {"previous_token", "duplicate_token", "induction"} and len(scores) == 3 * 16
    assert scores["value"].between(0, 1).all()
    table = build_atlas(RunStore(runs), model="tiny-llama").table
    assert {"induction", "previous_token", "duplicate_token", "dla.ioi"} <= set(table.columns)


def test_set_overrides_and_validate(tmp_path, capsys):
    cfg = _write(tmp_path, SMALL)
    assert main(["validate", str(cfg), "--set", "data.n_prompts=2"]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    "patch, path_in_message, allowed",
    [
        ({"analyses": {"head_patching": {"metric": "nope"}}}, "analyses.head_patching.metric", "logit_diff"),
        ({"model": {"name": "no-such-model"}}, "model.name", "smollm2-135m"),
        ({"data": {"n_prompts": "many"}}, "data.n_prompts", "integer"),
        ({"data": {"soruce": "ioi"}}, "data.soruce", "allowed keys"),
        ({"data": {"source": "jsonl", "path": "missing.jsonl"}}, "data.path", "does not exist"),
    ],
)
def test_bad_yaml_errors_name_the_path(tmp_path, capsys, patch, path_in_message, allowed):
    cfg = {"name": "bad", **{k: v for k, v in SMALL.items() if k not in ("name", *patch)}, **patch}
    code = main(["validate", str(_write(tmp_path, cfg))])
    err = capsys.readouterr().err
    assert code == 2
    assert path_in_message in err and allowed in err
    assert "Traceback" not in err


def test_bad_dataset_line_is_reported(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    good = {"clean": "When Mary and John went to the store, John gave a drink to",
            "corrupt": "When Alice and Bob went to the store, Carl gave a drink to",
            "answer": " Mary", "distractor": " John"}
    bad = {**good, "corrupt": "When Alice and Bob went to the big store, Carl gave a drink to"}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    cfg = {**SMALL, "data": {"source": "jsonl", "path": str(data)}}
    code = main(["run", str(_write(tmp_path, cfg)), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "pairs.jsonl:2" in err and "token" in err


def test_failed_run_keeps_finished_analyses(tmp_path, monkeypatch):
    import interp.io.shared_steps as shared_steps

    def boom(*a, **k):
        raise RuntimeError("dla exploded")

    monkeypatch.setattr(shared_steps, "direct_logit_attribution", boom)
    cfg = _write(tmp_path, SMALL)
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="dla exploded"):
        main(["run", str(cfg), "--runs-dir", str(runs), "--quiet"])
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "dla exploded" in manifest["error"]
    assert "head_patching" in manifest["analyses_done"]
    assert (run_dir / "tables" / "head_patching.parquet").is_file()
    assert "FAILED" in (run_dir / "report.html").read_text()


def test_models_and_runs_listing(tmp_path, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-llama" in out and "present" in out
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "no runs" in capsys.readouterr().out
