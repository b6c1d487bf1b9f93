"""Experiment kinds as plugins (one registry, discovered modules, steps the runner writes) and
the config/preflight checks of issue 14: bad `kind`, IOI template ranges, data files and the
output location checked with the tokenizer only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from interp.cli import main
from interp.core.errors import ConfigError, DatasetError
from interp.io.config import parse_config
from interp.io.registry import KINDS, get_kind, load_kinds, register_kind
from interp.io.schema import BaseExperimentConfig

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
GOOD = {"clean": "When Mary and John went to the store, John gave a drink to",
        "corrupt": "When Alice and Bob went to the store, Carl gave a drink to",
        "answer": " Mary", "distractor": " John"}


def _yaml(tmp_path: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


# --- kind ------------------------------------------------------------------------------------


def test_kind_that_is_a_list_is_one_line_naming_kind_and_the_allowed_kinds(tmp_path, capsys):
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "x", "kind": ["circuit"]})
    assert info.value.path == "kind" and "allowed: " in str(info.value) and "circuit" in str(info.value)
    assert main(["validate", str(_yaml(tmp_path, {"name": "x", "kind": ["circuit"]}))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind" in err and "patching" in err and "Traceback" not in err


def test_every_kind_extends_the_base_config_and_is_discovered():
    kinds = load_kinds()
    assert {"patching", "circuit", "mcq_letters", "knowledge_conflicts", "retrieval_heads",
            "speech_saliency", "vision_heads"} <= set(kinds)
    for name, kind in kinds.items():
        assert issubclass(kind.config, BaseExperimentConfig), name
        assert kind.steps, name
        for field in ("kind", "name", "description", "seed", "model", "output"):
            assert field in kind.config.model_fields, (name, field)


def test_a_second_kind_of_the_same_name_is_refused():
    class Other(BaseExperimentConfig):
        kind: str = "patching"

    with pytest.raises(ValueError, match="registered twice"):
        register_kind("patching", Other, prepare=lambda cfg, model, log: None)
    assert KINDS["patching"].config.__name__ == "ExperimentConfig"


NEW_KIND = '''
from typing import Literal
import pandas as pd
from interp.io.registry import register_kind
from interp.io.schema import BaseExperimentConfig
from interp.io.step import StepResult


class ToyConfig(BaseExperimentConfig):
    kind: Literal["toy_kind"] = "toy_kind"


def first(ctx):
    ctx.progress("toy")(1, 1)
    return StepResult("first", tables={"first": pd.DataFrame({"x": [1, 2]})}, summary=["first done"])


def second(ctx):
    raise RuntimeError("second exploded")


register_kind("toy_kind", ToyConfig, first, second, prepare=lambda cfg, model, log: None)
'''


def test_a_new_kind_is_one_new_module(tmp_path, monkeypatch):
    """A module dropped into the kinds package is found by `load_kinds` (no list to edit); its
    steps return results, the runner writes them and keeps them when a later step fails."""
    import interp.io.kinds as package
    from interp.io.runner import run_experiment
    from interp.models import load_model

    (tmp_path / "toy_kind.py").write_text(NEW_KIND)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "interp.io.kinds.toy_kind", raising=False)
    try:
        cfg = parse_config({"kind": "toy_kind", "name": "toy", "model": {"name": "tiny-llama"}})
        assert get_kind("toy_kind").config is type(cfg)
        with pytest.raises(RuntimeError, match="second exploded"):
            run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None,
                           model=load_model("tiny-llama", device="cpu"))
    finally:
        KINDS.pop("toy_kind", None)
        sys.modules.pop("interp.io.kinds.toy_kind", None)
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["analyses_done"] == ["first"]
    assert manifest["kind"] == "toy_kind" and (run_dir / "tables" / "first.parquet").is_file()


# --- IOI templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "path"), [
    ({"templates": [999]}, "data.templates"),
    ({"templates": [0, 30]}, "data.templates"),
    ({"position_template": 999}, "data.position_template"),
])
def test_ioi_template_out_of_range_is_a_config_error_at_load_time(data, path):
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "x", "data": data})
    assert info.value.path == path and "0..29" in str(info.value)


def test_circuit_templates_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "x", "kind": "circuit", "data": {"templates": [31]}})
    assert info.value.path == "data.templates" and "0..29" in str(info.value)


# --- validate: data files and output, without weights ------------------------------------------


def _pairs_config(tmp_path: Path, lines: list[str]) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return _yaml(tmp_path, {"name": "x", "model": {"name": "tiny-llama"},
                            "data": {"source": "jsonl", "path": str(data)}})


def test_validate_reports_every_broken_line_by_its_physical_line(tmp_path, capsys, no_weights):
    unequal = {**GOOD, "corrupt": GOOD["corrupt"].replace("store", "big store")}
    multi = {**GOOD, "answer": " Maryanne-Louise"}
    lines = [json.dumps(GOOD), "", json.dumps(unequal), json.dumps(multi), "{not json",
             json.dumps({**GOOD, "extra": 1}), json.dumps(GOOD)]
    assert main(["validate", str(_pairs_config(tmp_path, lines))]) == 2
    err = capsys.readouterr().err
    for line, what in ((3, "tokens but corrupt"), (4, "answer"), (5, "invalid JSON"), (6, "unknown key")):
        assert f"pairs.jsonl:{line}: " in err and what in err, (line, err)
    assert "pairs.jsonl:1:" not in err and "pairs.jsonl:7:" not in err and "4 broken lines" in err


def test_tokenize_pairs_names_the_physical_line_after_a_blank_line(tmp_path):
    from interp.data.pairs import load_jsonl, tokenize_pairs
    from interp.models.tokenizers import load_tokenizer

    path = tmp_path / "pairs.jsonl"
    bad = {**GOOD, "corrupt": GOOD["corrupt"].replace("store", "big store")}
    path.write_text("\n".join([json.dumps(GOOD), "", "", json.dumps(bad)]) + "\n")
    with pytest.raises(DatasetError) as info:
        tokenize_pairs(load_jsonl(path), load_tokenizer("tiny-llama"))
    assert info.value.line == 4


def test_validate_ok_prints_the_checks(tmp_path, capsys, no_weights):
    assert main(["validate", str(_pairs_config(tmp_path, [json.dumps(GOOD)] * 2))]) == 0
    out = capsys.readouterr().out
    assert "2 prompt pairs" in out and "output: runs go to" in out


def test_validate_refuses_a_runs_dir_that_is_a_file(tmp_path, capsys, no_weights):
    (tmp_path / "runs").write_text("not a directory")
    cfg = _yaml(tmp_path, {"name": "x", "model": {"name": "tiny-llama"},
                           "output": {"runs_dir": str(tmp_path / "runs")}})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "output.runs_dir" in err and "is a file" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_run_refuses_a_read_only_runs_dir_before_loading_the_model(tmp_path, capsys, no_weights):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        cfg = _yaml(tmp_path, {"name": "x", "model": {"name": "tiny-llama"}, "output": {"runs_dir": str(ro / "runs")}})
        assert main(["run", str(cfg), "--quiet"]) == 2
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err
    assert "output.runs_dir" in err and "not writable" in err


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_every_shipped_experiment_validates_without_weights(name, no_weights):
    assert main(["validate", str(EXPERIMENTS / name)]) == 0


# --- work limit ----------------------------------------------------------------------------------


def test_a_run_over_the_work_limit_is_refused_naming_the_field_unless_forced(tmp_path, monkeypatch):
    import interp.io.limits as limits
    from interp.io.runner import run_experiment
    from interp.models import load_model

    model = load_model("tiny-llama", device="cpu")
    cfg = parse_config({"name": "x", "model": {"name": "tiny-llama"}, "data": {"n_prompts": 4, "position_n_prompts": 2},
                        "analyses": {"residual_patching": {"enabled": False}, "dla": {"enabled": False},
                                     "accuracy": {"enabled": False}}})
    monkeypatch.setattr(limits, "MAX_FORWARDS", 10)
    with pytest.raises(ConfigError) as info:
        run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model)
    assert info.value.path == "data.n_prompts" and "--force" in str(info.value)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # refused before the run
    run = run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model,
                         force=True)
    assert "head_patching" in run.read_manifest()["analyses_done"]


@pytest.mark.parametrize(("yaml", "setting", "field"), [
    ("ioi.yaml", "data.n_prompts=1000000000", "data.n_prompts"),
    ("mcq_letters.yaml", "data.n_prompts=100000000", "analyses.compression.ranks"),
    ("retrieval_heads.yaml", "data.lengths=[1000000000]", "data.lengths"),
])
def test_a_huge_setting_is_refused_before_any_prompt_is_built(yaml, setting, field, capsys, no_weights, monkeypatch):
    """A config-only lower bound of the work is checked first: a billion prompts are refused
    in one line without generating them (the generators would run for hours)."""
    import interp.io.kinds.mcq as mcq
    import interp.io.kinds.patching as patching

    def never(*a, **k):
        raise AssertionError("prompts were generated before the work limit was checked")

    monkeypatch.setattr(patching, "generate_ioi", never, raising=False)
    monkeypatch.setattr(mcq, "generate_mcq", never, raising=False)
    path = Path(__file__).resolve().parents[2] / "experiments" / yaml
    assert main(["validate", str(path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "--force" in err and len(err.strip().splitlines()) == 1
