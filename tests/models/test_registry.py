"""Model-name classification and its error messages (no loading, no network)."""

from __future__ import annotations

import json

import pytest

from interp.core.errors import InterpError, ModelLoadError
from interp.models.registry import (
    BUNDLED,
    TINY,
    check_model_name,
    describe_model_name,
    known_names,
)


def test_known_names():
    assert known_names() == [*BUNDLED, *TINY]
    assert {"smollm2-135m", "tiny-llama", "tiny-gpt2"} <= set(known_names())


@pytest.mark.parametrize(
    ("name", "kind"),
    [("smollm2-135m", "bundled"), ("tiny-llama", "tiny"), ("tiny-gpt2", "tiny")],
)
def test_short_names(name, kind):
    info = describe_model_name(name)
    assert info.kind == kind and info.name == name and info.description


@pytest.mark.parametrize(
    "name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2/gpt2", "org/model.v1-2_b", "a/b"]
)
def test_hub_id_form(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative directory of that name must not exist
    info = describe_model_name(name)
    assert info.kind == "hub" and name in info.description


def test_local_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    info = describe_model_name(str(tmp_path))
    assert info.kind == "local"


def test_local_directory_wins_over_hub_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text("{}")
    assert describe_model_name("org/name").kind == "local"


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        ModelLoadError, match="is a directory but holds no Hugging Face model \\(no config.json\\)"
    ):
        describe_model_name(str(tmp_path))


@pytest.mark.parametrize(
    "name",
    ["smollm2", "tiny_llama", "gpt2", "a/b/c", "/no/such/dir", "./missing", "~/nope/x", "org/"],
)
def test_unknown_name_lists_allowed(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        describe_model_name(name)
    msg = str(e.value)
    assert f"unknown model {name!r}" in msg
    for allowed in known_names():
        assert allowed in msg
    assert "hub id" in msg and "config.json" in msg


def test_check_model_name():
    check_model_name("tiny-llama")
    with pytest.raises(ModelLoadError):
        check_model_name("not-a-model")
    assert issubclass(ModelLoadError, InterpError)


def test_empty_name_is_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="unknown model ''"):
        describe_model_name("")
