"""Experiment config: defaults, every kind of error (path + what is allowed), overrides."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from interp.core.errors import ConfigError
from interp.io.config import (
    ExperimentConfig,
    load_config,
    parse_config,
    parse_set_args,
    with_overrides,
)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _error(data: object, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return info.value


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = parse_config({"name": "ioi"})
    assert cfg.model.name == "smollm2-135m" and cfg.model.device == "auto"
    assert cfg.model.dtype == "float32" and cfg.seed == 0 and cfg.description == ""
    assert cfg.data.source == "ioi" and cfg.data.n_prompts == 20 and cfg.data.corruption == "abc"
    # None: follow the model
    assert cfg.data.templates is None and cfg.data.path is None and cfg.data.prepend_bos is None
    hp = cfg.analyses.head_patching
    assert (hp.enabled, hp.direction, hp.metric, hp.per_position, hp.batch_size) == (
        True,
        "denoising",
        "logit_diff",
        False,
        64,
    )
    assert cfg.analyses.residual_patching.components == ("resid_pre", "attn_out", "mlp_out")
    assert cfg.analyses.accuracy.enabled and cfg.analyses.dla.enabled
    assert str(cfg.output.runs_dir) == "runs" and cfg.output.top_k == 10


@pytest.mark.parametrize("name", ["ioi.yaml", "ioi_small.yaml"])
def test_shipped_experiments_load(name: str) -> None:
    cfg = load_config(EXPERIMENTS / name)
    assert cfg.name == name.removesuffix(".yaml")
    assert cfg.data.n_prompts == (8 if "small" in name else 20)


def test_frozen() -> None:
    cfg = parse_config({"name": "ioi"})
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.data.n_prompts = 1  # type: ignore[misc]
    hash(cfg.analyses.residual_patching.components)  # tuples, not lists


def test_to_dict_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text("{}\n")
    cfg = parse_config(
        {
            "name": "x",
            "data": {"source": "jsonl", "path": str(data)},
            "analyses": {"residual_patching": {"components": ["resid_mid"]}},
        }
    )
    d = cfg.to_dict()
    assert d["analyses"]["residual_patching"]["components"] == ["resid_mid"]
    assert d["data"]["path"] == str(data.resolve()) and d["output"]["runs_dir"] == "runs"
    import json

    assert parse_config(json.loads(json.dumps(d))) == cfg


def test_unknown_key_lists_allowed_keys() -> None:
    err = _error({"name": "x", "data": {"nprompts": 8}})
    assert err.path == "data.nprompts"
    assert "did you mean 'n_prompts'" in str(err)
    assert ("source, n_prompts, corruption, templates, path, position_template, position_n_prompts, prepend_bos"
            in str(err))
    top = _error({"name": "x", "modle": {}})
    assert top.path == "modle" and "allowed keys: kind, name, description, seed, model" in str(top)


def test_missing_required_name() -> None:
    err = _error({"seed": 1})
    assert err.path == "name" and "required" in str(err)


def test_bad_name_pattern() -> None:
    err = _error({"name": "my run"})
    assert err.path == "name" and "letters, digits" in str(err)


@pytest.mark.parametrize(
    ("data", "path", "expect"),
    [
        ({"data": {"n_prompts": "8"}}, "data.n_prompts", "integer"),
        ({"data": {"n_prompts": 0}}, "data.n_prompts", ">= 1"),
        ({"seed": True}, "seed", "integer"),
        ({"data": {"prepend_bos": "yes"}}, "data.prepend_bos", "true or false"),
        ({"model": "tiny-gpt2"}, "model", "mapping with keys: name, device, dtype"),
        ({"output": {"top_k": 0}}, "output.top_k", ">= 1"),
        ({"data": {"templates": [0, -1]}}, "data.templates[1]", ">= 0"),
        ({"data": {"templates": "all"}}, "data.templates", "list"),
        (
            {"analyses": {"head_patching": {"batch_size": 0}}},
            "analyses.head_patching.batch_size",
            ">= 1",
        ),
    ],
)
def test_wrong_types_and_ranges(data: dict, path: str, expect: str) -> None:
    err = _error({"name": "x", **data})
    assert err.path == path and path in str(err) and expect in str(err)


@pytest.mark.parametrize(
    ("data", "path", "allowed"),
    [
        ({"model": {"device": "gpu"}}, "model.device", ["cpu", "cuda", "auto"]),
        ({"model": {"dtype": "fp16"}}, "model.dtype", ["float32", "bfloat16", "float16"]),
        ({"data": {"source": "csv"}}, "data.source", ["ioi", "jsonl"]),
        ({"data": {"corruption": "swap"}}, "data.corruption", ["abc", "flip"]),
        (
            {"analyses": {"head_patching": {"direction": "both"}}},
            "analyses.head_patching.direction",
            ["denoising", "noising"],
        ),
        (
            {"analyses": {"residual_patching": {"components": ["resid_pre", "attn"]}}},
            "analyses.residual_patching.components[1]",
            ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"],
        ),
        (
            {"analyses": {"head_patching": {"metric": "kl"}}},
            "analyses.head_patching.metric",
            ["logit_diff", "prob"],
        ),
        (
            {"analyses": {"residual_patching": {"metric": "kl"}}},
            "analyses.residual_patching.metric",
            ["logit_diff"],
        ),
    ],
)
def test_bad_enum_values_list_allowed(data: dict, path: str, allowed: list[str]) -> None:
    err = _error({"name": "x", **data})
    assert err.path == path and str(err).count(path) == 1
    for value in allowed:
        assert value in str(err)


def test_components_empty_or_repeated() -> None:
    empty = _error({"name": "x", "analyses": {"residual_patching": {"components": []}}})
    assert empty.path == "analyses.residual_patching.components" and "empty" in str(empty)
    twice = _error(
        {"name": "x", "analyses": {"residual_patching": {"components": ["mlp_out", "mlp_out"]}}}
    )
    assert "more than once: mlp_out" in str(twice)


def test_unknown_model() -> None:
    err = _error({"name": "x", "model": {"name": "no-such-model"}})
    assert err.path == "model.name" and "no-such-model" in str(err) and "smollm2-135m" in str(err)


def test_jsonl_needs_existing_path(tmp_path: Path) -> None:
    err = _error({"name": "x", "data": {"source": "jsonl"}})
    assert err.path == "data.path" and "required" in str(err)
    missing = _error(
        {"name": "x", "data": {"source": "jsonl", "path": "p.jsonl"}}, base_dir=tmp_path
    )
    assert missing.path == "data.path" and str(tmp_path / "p.jsonl") in str(missing)


def test_jsonl_path_resolves_against_yaml_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.jsonl").write_text("{}\n")
    path = _write(tmp_path / "sub", "name: x\ndata:\n  source: jsonl\n  path: p.jsonl\n")
    assert load_config(path).data.path == (tmp_path / "sub" / "p.jsonl").resolve()


def test_fields_of_the_other_source_are_rejected(tmp_path: Path) -> None:
    err = _error({"name": "x", "data": {"path": "p.jsonl"}})
    assert err.path == "data.path" and "only used when data.source is 'jsonl'" in str(err)
    (tmp_path / "p.jsonl").write_text("{}\n")
    jsonl = {"source": "jsonl", "path": str(tmp_path / "p.jsonl"), "n_prompts": 3}
    err = _error({"name": "x", "data": jsonl})
    assert err.path == "data.n_prompts" and "'ioi'" in str(err)


def test_several_problems_are_all_reported() -> None:
    err = _error({"name": "x", "seed": -1, "output": {"top_k": 0}})
    assert "2 problems" in str(err) and "seed:" in str(err) and "output.top_k:" in str(err)
    assert err.path == "seed"


def test_not_a_mapping_and_empty(tmp_path: Path) -> None:
    err = _error([1, 2])
    assert "mapping" in str(err) and "got a list" in str(err) and "name, description" in str(err)
    empty = _write(tmp_path, "")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    listy = _write(tmp_path, "- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match="list.yaml: the config must be a mapping"):
        load_config(listy)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1") as info:
        load_config(path)
    assert info.value.file == str(path)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nseed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: duplicate key 'seed'"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_file_name_in_validation_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nmodel:\n  device: gpu\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: model.device:")


def test_overrides() -> None:
    cfg = parse_config({"name": "x"})
    new = with_overrides(
        cfg,
        {
            "data.n_prompts": "8",
            "data.prepend_bos": "true",
            "analyses.residual_patching.components": "[resid_mid, mlp_out]",
            "seed": 3,
            "description": "a: b",
            "output.runs_dir": "out: [x",
        },
    )
    assert new.data.n_prompts == 8 and new.data.prepend_bos is True and new.seed == 3
    assert new.analyses.residual_patching.components == ("resid_mid", "mlp_out")
    assert new.description == "a: b" and str(new.output.runs_dir) == "out: [x"
    assert cfg.data.n_prompts == 20  # the original is untouched


@pytest.mark.parametrize(
    ("overrides", "path", "expect"),
    [
        ({"data.n_prompts": "abc"}, "data.n_prompts", "integer"),
        ({"data.nprompts": "8"}, "data.nprompts", "allowed keys"),
        ({"foo.bar": "1"}, "foo", "allowed keys: kind, name"),
        ({"seed.x": "1"}, "seed.x", "not a section"),
        ({"data..x": "1"}, "data..x", "dotted path"),
        ({"data.n_prompts": "[1"}, "data.n_prompts", "got a string '[1'"),
        ({"model.device": "gpu"}, "model.device", "'cpu', 'cuda' or 'auto'"),
    ],
)
def test_bad_overrides(overrides: dict, path: str, expect: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(parse_config({"name": "x"}), overrides)
    assert info.value.path == path and expect in str(info.value)


def test_parse_set_args() -> None:
    assert parse_set_args(["data.n_prompts=8", " seed = 2 ", "description=a=b"]) == {
        "data.n_prompts": "8",
        "seed": "2",
        "description": "a=b",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_args(["data.n_prompts"])


def test_model_validate_directly_is_also_checked() -> None:
    with pytest.raises(pydantic.ValidationError):
        ExperimentConfig.model_validate({"name": "x", "data": {"source": "jsonl"}})
