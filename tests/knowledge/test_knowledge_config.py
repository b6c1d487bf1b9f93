"""The `knowledge_conflicts` experiment kind: config validation errors name the YAML path and
what is allowed; a run end to end on the tiny model with a small fact table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from interp.cli import main
from interp.core.errors import ConfigError
from interp.io.atlas import run_head_scores
from interp.io.config import load_config, parse_config, with_overrides
from interp.io.runstore import Run

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "experiments" / "knowledge_conflicts.yaml"


def _cfg(**sections):
    return {"kind": "knowledge_conflicts", "name": "kc_test", **sections}


def test_shipped_yaml_loads():
    cfg = load_config(YAML)
    assert cfg.kind == "knowledge_conflicts" and cfg.model.name == "smollm2-135m"
    assert cfg.data.heldout_relations == ("official_language", "landmark_country", "antonym")
    assert cfg.analyses.ph3.ks == (3, 10) and cfg.analyses.ph3.ablation == "zero"
    assert parse_config(cfg.to_dict()) == cfg
    small = with_overrides(cfg, {"analyses.ph3.ks": "[2]", "data.max_per_relation": "null"})
    assert small.analyses.ph3.ks == (2,) and small.data.max_per_relation is None


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            _cfg(data={"heldout_relation": ["antonym"]}),
            "data.heldout_relation",
            "did you mean 'heldout_relations'",
        ),
        (_cfg(data={"heldout_relations": []}), "data.heldout_relations", "must not be empty"),
        (_cfg(data={"heldout_relations": ["a", "a"]}), "data.heldout_relations", "more than once"),
        (
            _cfg(data={"heldout_relations": ["capital of"]}),
            "data.heldout_relations[0]",
            "invalid value",
        ),
        (_cfg(data={"relations": []}), "data.relations", "empty list"),
        (
            _cfg(data={"relations": ["capital_of"], "heldout_relations": ["antonym"]}),
            "data.heldout_relations",
            "antonym not in data.relations",
        ),
        (
            _cfg(data={"relations": ["antonym"], "heldout_relations": ["antonym"]}),
            "data.heldout_relations",
            "every relation is held out",
        ),
        (_cfg(data={"facts": "nowhere.jsonl"}), "data.facts", "does not exist"),
        (_cfg(data={"max_per_relation": 0}), "data.max_per_relation", ">= 1"),
        (_cfg(data={"chat": "yes"}), "data.chat", "true or false"),
        (_cfg(analyses={"ph3": {"ks": []}}), "analyses.ph3.ks", "must not be empty"),
        (_cfg(analyses={"ph3": {"ks": [0]}}), "analyses.ph3.ks[0]", ">= 1"),
        (_cfg(analyses={"ph3": {"ks": [3, 3]}}), "analyses.ph3.ks", "more than once"),
        (_cfg(analyses={"ph3": {"n_random": -1}}), "analyses.ph3.n_random", ">= 0"),
        (
            _cfg(analyses={"ph3": {"ablation": "uniform"}}),
            "analyses.ph3.ablation",
            "'zero' or 'mean'",
        ),
        (
            _cfg(analyses={"heads": {"enabled": False}}),
            "analyses.ph3.enabled",
            "analyses.heads.enabled: true",
        ),
        (_cfg(analyses={"heads": {"batch_size": 0}}), "analyses.heads.batch_size", ">= 1"),
        (_cfg(analyses={"rate": {}}), "analyses.rate", "did you mean 'rates'"),
    ],
)
def test_config_errors_name_the_yaml_path(data, path, message):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == path
    assert message in str(e.value)


def test_ph3_off_needs_no_heads():
    cfg = parse_config(_cfg(analyses={"heads": {"enabled": False}, "ph3": {"enabled": False}}))
    assert not cfg.analyses.heads.enabled


def _small_table(tmp_path: Path) -> Path:
    rel = [
        {
            "relation": "capital_of",
            "question": "What is the capital of {subject}?",
            "cloze": "The capital of {subject} is",
        },
        {
            "relation": "antonym",
            "question": "What is the opposite of {subject}?",
            "cloze": "The opposite of {subject} is",
        },
    ]
    caps = [
        ("France", "Paris"),
        ("Spain", "Madrid"),
        ("Italy", "Rome"),
        ("Peru", "Lima"),
        ("Chile", "Santiago"),
        ("Japan", "Tokyo"),
    ]
    ants = [("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow")]
    lines = rel + [{"subject": s, "relation": "capital_of", "object": o} for s, o in caps]
    lines += [{"subject": s, "relation": "antonym", "object": o} for s, o in ants]
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _tiny_yaml(tmp_path: Path, **data) -> Path:
    cfg = yaml.safe_load(YAML.read_text())
    cfg["model"]["name"] = "tiny-llama"
    cfg["data"].update(
        {
            "facts": str(_small_table(tmp_path)),
            "heldout_relations": ["antonym"],
            "known_only": False,
            **data,
        }
    )
    cfg["analyses"]["ph3"].update({"ks": [2], "n_random": 2})
    path = tmp_path / "kc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.integration  # a whole experiment run, end to end
def test_experiment_runs_end_to_end_on_the_tiny_model(tmp_path, capsys, tokenizer):
    runs = tmp_path / "runs"
    assert main(["run", str(_tiny_yaml(tmp_path)), "--runs-dir", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (
        "closed book: the model knows" in out
        and "memory-rate" in out
        and "prune top-2 context heads" in out
    )
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "knowledge_conflicts"
    assert manifest["dataset"]["n"] == 10 and manifest["dataset"]["n_heldout"] == 4
    tables = {p.stem for p in (run_dir / "tables").iterdir()}
    assert {
        "closed_book",
        "closed_book_by_relation",
        "conflict_items",
        "conflict_rates",
        "conflict_rates_by_relation",
        "conflict_pairs",
        "head_effects",
        "head_effects_per_prompt",
        "head_effects_by_relation",
        "head_scores",
        "ph3",
        "ph3_summary",
    } <= tables
    scores = pd.read_parquet(run_dir / "tables" / "head_scores.parquet")
    assert set(scores["score"]) == {"knowledge.memory_context", "knowledge.sign_consistency"}
    assert len(scores) == 2 * 4 * 4  # tiny-llama: 4 layers x 4 heads
    atlas = run_head_scores(Run(run_dir))
    assert {"knowledge.memory_context", "knowledge.sign_consistency"} <= set(atlas["score"])
    ph3 = pd.read_parquet(run_dir / "tables" / "ph3_summary.parquet")
    assert list(ph3["condition"]) == [
        "none",
        "prune_context",
        "random_context",
        "prune_memory",
        "random_memory",
    ]
    figures = {p.name.split(".")[0] for p in (run_dir / "figures").iterdir()}
    assert {"conflict_rates", "head_effects", "head_sign_consistency", "ph3"} <= figures
    assert "PH3: pruning memory or context heads" in (run_dir / "report.html").read_text()


def test_unknown_relation_is_a_config_error_before_the_run(tmp_path, capsys, tokenizer):
    path = _tiny_yaml(tmp_path, heldout_relations=["currency"])
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "data.heldout_relations[0]" in err
        and "unknown relation 'currency'" in err
        and "capital_of, antonym" in err
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
