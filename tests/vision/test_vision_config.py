"""The `vision_heads` experiment kind: config validation, and a full run on the tiny random LLaVA."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config, with_overrides
from interp.io.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "experiments" / "vision_heads.yaml"


def _cfg(**sections):
    return {"kind": "vision_heads", "name": "vision_test", **sections}


def test_shipped_yaml_loads():
    cfg = load_config(YAML)
    assert cfg.kind == "vision_heads" and cfg.model.name == "shapes-llava"
    assert cfg.analyses.vhr.alphas == (1.1, 1.25, 1.5, 2.0) and cfg.analyses.vhr.layers is None
    assert parse_config(cfg.to_dict()) == cfg
    assert with_overrides(cfg, {"analyses.vhr.layers": "[1, 20, 29]"}).analyses.vhr.layers == (1, 20, 29)


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (_cfg(model={"name": "smollm2-135m"}), "model.name",
         "not a vision-language (LLaVA) model; allowed: shapes-llava"),
        (_cfg(model={"name": "no such model"}), "model.name", "vision-language models: shapes-llava"),
        (_cfg(data={"n_prob": 3}), "data.n_prob", "did you mean 'n_probe'"),
        (_cfg(data={"n_probe": -1}), "data.n_probe", ">= 0"),
        (_cfg(data={"qtypes": ["colour", "size"]}), "data.qtypes[1]",
         "'colour', 'shape', 'position', 'count' or 'caption'"),
        (_cfg(data={"qtypes": []}), "data.qtypes", "must not be empty"),
        (_cfg(data={"qtypes": ["shape", "shape"]}), "data.qtypes", "more than once"),
        (_cfg(analyses={"vhr": {"alphas": [2.0, 0]}}), "analyses.vhr.alphas[1]", "greater than 0"),
        (_cfg(analyses={"vhr": {"alphas": []}}), "analyses.vhr.alphas", "must not be empty"),
        (_cfg(analyses={"vhr": {"alpha": 2}}), "analyses.vhr.alpha", "did you mean 'alphas'"),
        (_cfg(analyses={"vhr": {"layers": []}}), "analyses.vhr.layers", "empty list"),
        (_cfg(analyses={"vhr": {"layers": [3, 3]}}), "analyses.vhr.layers", "more than once"),
        (_cfg(analyses={"vhr": {"layers": [-2]}}), "analyses.vhr.layers[0]", ">= 0"),
        (_cfg(analyses={"vhd": {"top_k": 0}}), "analyses.vhd.top_k", ">= 1"),
        (_cfg(analyses={"max_new_tokens": "many"}), "analyses.max_new_tokens", "an integer"),
    ],
)
def test_config_errors_name_the_yaml_path(data, path, message):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == path
    assert message in str(e.value)


def test_layer_outside_the_model_is_a_config_error(tiny_llava, tmp_path):
    cfg = parse_config(_cfg(data={"n_probe": 1, "n_shapes": 0}, analyses={"vhr": {"layers": [0, 7]}}))
    with pytest.raises(ConfigError) as e:
        run_experiment(cfg, model=tiny_llava, runs_dir=tmp_path, show_progress=False, log=lambda s: None)
    assert e.value.path == "analyses.vhr.layers[1]" and "layers 0..1" in str(e.value)
    assert not list(tmp_path.iterdir())  # failed before creating a run


def test_no_questions_is_a_config_error(tiny_llava, tmp_path):
    cfg = parse_config(_cfg(data={"n_probe": 0, "n_shapes": 0}))
    with pytest.raises(ConfigError, match="no questions"):
        run_experiment(cfg, model=tiny_llava, runs_dir=tmp_path, show_progress=False, log=lambda s: None)


@pytest.mark.integration  # a whole experiment run, end to end
def test_run_on_tiny_llava_writes_tables_figures_report(tiny_llava, tmp_path):
    cfg = parse_config(_cfg(data={"n_probe": 3, "n_shapes": 3},
                            analyses={"max_new_tokens": 3, "batch_size": 4,
                                      "vhr": {"alphas": [1.5, 2.0], "random_seeds": [0, 1]}}))
    lines: list[str] = []
    run = run_experiment(cfg, model=tiny_llava, runs_dir=tmp_path, show_progress=False, log=lines.append)
    assert {"dataset", "vhd", "head_scores", "tvhd_tokens", "vhr_heads", "vhr_effect", "answers",
            "hallucination"} <= set(run.tables())
    assert {"vhd_first_token", "vhd_all_tokens", "tvhd", "vhr"} <= set(run.figures())
    hs = run.read_table("head_scores")
    assert list(hs.columns) == ["layer", "head", "score", "value"]
    assert set(hs["score"]) == {"vhd.shapes.first_token", "vhd.shapes.all_tokens"} and len(hs) == 2 * 2 * 4
    summary = run.read_table("hallucination")
    assert set(summary["condition"]) == {"baseline", "vhr a=1.5", "random a=1.5 seed=0", "random a=1.5 seed=1",
                                         "vhr a=2.0", "random a=2.0 seed=0", "random a=2.0 seed=1"}
    assert summary[["accuracy", "chair_i", "chair_s"]].stack().between(0, 1).all()
    effect = run.read_table("vhr_effect")
    assert set(effect["method"]) == {"baseline", "vhr", "random"} and set(effect["alpha"]) == {1.0, 1.5, 2.0}
    answers = run.read_table("answers")
    assert len(answers) == 7 * 9  # (3 probe questions + 3 captions + 3 shapes) x 7 conditions
    assert set(run.read_table("vhr_heads")["alpha"]) == {1.5, 2.0}
    report = (run.path / "report.html").read_text()
    assert "VHR vs random heads" in report and "T-VHD" in report
    assert any(line.startswith("vision-aware heads") for line in lines)
    from interp.io.atlas import run_head_scores

    assert len(run_head_scores(run)) == 16


def test_scoring_counts_attribute_hallucinations():
    from interp.analyses.hallucination import score_answers, summarise
    from interp.data.shapes import generate_prior_probe

    it = generate_prior_probe(1, seed=0, image_size=28).items[0]  # a banana, not yellow
    items = [("probe", it)] * 3
    texts = [it.answer, "yellow", f"a {it.answer} triangle"]
    s = score_answers(texts, items, "x")
    assert s["correct"].tolist() == [True, False, False]
    assert s["n_hallucinated"].tolist() == [0, 1, 1]
    assert s["said_prior"].tolist() == [False, True, False]
    row = summarise(s).iloc[0]
    assert row.chair_i == pytest.approx(2 / 4) and row.chair_s == pytest.approx(2 / 3)
    assert isinstance(summarise(s), pd.DataFrame)
