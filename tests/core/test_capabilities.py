"""Capabilities are asked for by type: `require` returns the model or refuses naming what is
missing; the port (`HookedModel`) is structural."""

from __future__ import annotations

import pytest
import torch

from interp.core.capabilities import (
    AudioInput,
    Incremental,
    LanguageModel,
    Resumable,
    TextInput,
    has,
    require,
)
from interp.core.errors import UnsupportedError
from interp.core.hooks import temporary_hooks
from interp.core.model import BlockInputs, HookedModel
from interp.core.sites import Site


class _Port:
    """The smallest model: the port only."""

    name, backend, weights_sha256 = "toy", "none", None
    device, dtype = torch.device("cpu"), torch.float32
    spec = None

    def validate_site(self, site):
        return None

    def add_hook(self, site, fn):
        class H:
            def remove(self):
                return None

        return H()

    def hooks(self, hooks):
        return temporary_hooks(self, hooks)

    def forward(self, tokens):
        return tokens.float()


class _Resumable(_Port):
    def capture_block_inputs(self, tokens):
        return BlockInputs(batch=tokens.shape[0], resid_pre=[tokens.float()])

    def forward_from(self, layer, resid_pre, block_inputs, start_pos=0, end_layer=None):
        return resid_pre


def test_port_is_structural():
    assert isinstance(_Port(), HookedModel)
    assert not isinstance(object(), HookedModel)


def test_require_returns_the_model_with_the_capability():
    m = _Resumable()
    assert require(m, Resumable, "path patching") is m
    assert has(m, Resumable) and not has(m, Incremental)


def test_require_refuses_naming_analysis_model_and_missing_methods():
    with pytest.raises(UnsupportedError, match=r"path patching needs a model that can resume a forward at a "
                                               r"block \(Resumable\); 'toy' \(backend 'none'\) does not: it lacks "
                                               r"capture_block_inputs, forward_from"):
        require(_Port(), Resumable, "path patching")
    with pytest.raises(UnsupportedError, match="lacks forward_incremental"):
        require(_Resumable(), Incremental, "chunked prefill")


def test_block_inputs_are_opaque_to_core():
    inputs = _Resumable().capture_block_inputs(torch.zeros(2, 3))
    assert inputs.batch == 2 and not inputs.resumes_at_position and inputs.state is None
    assert Site("resid_pre", layer=0).component.value == "resid_pre"


def test_loaded_models_declare_their_capabilities(tiny_model):
    """The text backends are `TextInput` and `Resumable`; only the bridge is `Incremental`."""
    from interp.models.loading import load_model

    assert isinstance(tiny_model, HookedModel) and has(tiny_model, TextInput) and has(tiny_model, Resumable)
    assert has(tiny_model, Incremental) and not has(tiny_model, AudioInput)
    nn_model = load_model("tiny-llama", backend="nnsight")
    assert has(nn_model, Resumable) and not has(nn_model, Incremental)
    assert has(tiny_model, LanguageModel) and has(nn_model, LanguageModel)
    with pytest.raises(UnsupportedError,
                       match="'tiny-llama' \\(backend 'nnsight'\\) does not: it lacks forward_incremental"):
        require(nn_model, Incremental, "retrieval decoding")


def test_position_out_of_the_models_range_is_refused_by_validate_site(tiny_model):
    from interp.core.errors import SiteError

    n = tiny_model.spec.n_ctx
    tokens = tiny_model.to_tokens("When Mary and John went to the store")
    with pytest.raises(SiteError, match=rf"position 999 out of range -{n}\.\.{n - 1}"):
        tiny_model.validate_site(Site("resid_pre", layer=0, position=999))
    # inside the model's range but past this input: a SiteError too, not an IndexError
    with pytest.raises(SiteError, match=rf"position 200 out of range -{tokens.shape[1]}\.\.{tokens.shape[1] - 1}"):
        tiny_model.run_with_cache(tokens, [Site("resid_pre", layer=0, position=200)])
