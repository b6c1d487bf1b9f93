"""Parity: the hooked tiny models compute what a fresh raw Hugging Face model computes, and
`forward_from` resumes a forward at any layer without changing the result."""

from __future__ import annotations

import pytest
import torch

from interp.core.sites import Site

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ring to",
    "When Emma and James went to the school, James gave a bone to",
]
TOL = 1e-4


@pytest.fixture(scope="module")
def tokens(tiny_models):
    t = tiny_models["tiny-llama"].to_tokens(PROMPTS)
    assert t.shape[0] == 3
    return t


def test_hooked_logits_equal_raw_hf(tiny_model, raw_tiny, tokens):
    with torch.no_grad():
        expected = raw_tiny(input_ids=tokens).logits
    got = tiny_model.forward(tokens)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOL


def test_logits_unchanged_while_only_caching(tiny_model, raw_tiny, tokens):
    with torch.no_grad():
        expected = raw_tiny(input_ids=tokens).logits
    sites = [
        Site(c, layer)
        for layer in range(tiny_model.spec.n_layers)
        for c in ("resid_pre", "attn_out", "mlp_out", "z", "pattern")
    ]
    logits, _ = tiny_model.run_with_cache(tokens, sites)
    assert (logits - expected).abs().max().item() <= TOL


def test_unembed_equals_forward(tiny_model, tokens):
    logits, cache = tiny_model.run_with_cache(tokens, [Site("resid_final")])
    full = tiny_model.unembed(cache[Site("resid_final")])
    assert (full - logits).abs().max().item() <= TOL
    cols = torch.tensor([5, 17, 100, 5])
    part = tiny_model.unembed(cache[Site("resid_final")][:, -1], cols)
    torch.testing.assert_close(part, logits[:, -1, cols], rtol=0, atol=TOL)


def test_unembed_matches_core_formula(tiny_model, tokens):
    """The backend's norm module and the core's `apply_final_norm` (used by DLA) agree."""
    from interp.models.backends.base import generic_unembed

    _, cache = tiny_model.run_with_cache(tokens, [Site("resid_final", position=-1)])
    x = cache[Site("resid_final", position=-1)]
    generic = generic_unembed(tiny_model, x)
    torch.testing.assert_close(generic, tiny_model.unembed(x), rtol=0, atol=TOL)


def test_final_norm_kind(tiny_model, tiny_name):
    norm = tiny_model.final_norm()
    if tiny_name == "tiny-llama":
        assert norm.kind == "rms" and norm.bias is None
    else:
        assert norm.kind == "layernorm" and norm.bias is not None
    assert norm.weight.shape == (tiny_model.spec.d_model,)


def test_W_O_matches_raw_output_projection(tiny_model, raw_tiny, tiny_name):
    spec = tiny_model.spec
    for layer in range(spec.n_layers):
        W_O = tiny_model.W_O(layer)
        assert W_O.shape == (spec.n_heads, spec.d_head, spec.d_model)
        if tiny_name == "tiny-llama":
            raw = raw_tiny.model.layers[layer].self_attn.o_proj.weight.T  # (H*dh, d_model)
        else:
            raw = raw_tiny.transformer.h[layer].attn.c_proj.weight  # Conv1D: (H*dh, d_model)
        torch.testing.assert_close(W_O.reshape(-1, spec.d_model), raw, rtol=0, atol=0)


def test_unembed_matrix_matches_raw(tiny_model, raw_tiny):
    W_U, b_U = tiny_model.unembed_matrix()
    torch.testing.assert_close(W_U, raw_tiny.lm_head.weight.T, rtol=0, atol=0)
    if b_U is not None:
        assert torch.count_nonzero(b_U) == 0  # the raw heads have no bias


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_from_every_layer(tiny_model, tokens, copies, batch):
    toks = tokens[:batch]
    expected = tiny_model.forward(toks)[:, -1]
    inputs = tiny_model.capture_block_inputs(toks)
    assert inputs.batch == batch and len(inputs.resid_pre) == tiny_model.spec.n_layers
    for layer in range(tiny_model.spec.n_layers):
        x = inputs.resid_pre[layer].repeat(copies, 1, 1)
        final = tiny_model.forward_from(layer, x, inputs)
        assert final.shape == (copies * batch, toks.shape[1], tiny_model.spec.d_model)
        got = tiny_model.unembed(final[:, -1])
        assert (got - expected.repeat(copies, 1)).abs().max().item() <= TOL, layer


def test_captured_resid_pre_equals_cache(tiny_model, tokens):
    inputs = tiny_model.capture_block_inputs(tokens)
    _, cache = tiny_model.run_with_cache(tokens, [Site("resid_pre", layer) for layer in range(4)])
    for layer in range(4):
        torch.testing.assert_close(
            inputs.resid_pre[layer], cache[Site("resid_pre", layer)], rtol=0, atol=0
        )


def test_forward_from_batch_equal_to_length(tiny_model, tokens):
    """A captured batch as large as the sequence: per-position tensors must not be repeated."""
    T = tokens.shape[1]
    toks = tokens[torch.arange(T) % tokens.shape[0]]
    expected = tiny_model.forward(toks)[:, -1]
    inputs = tiny_model.capture_block_inputs(toks)
    final = tiny_model.forward_from(1, inputs.resid_pre[1].repeat(2, 1, 1), inputs)
    assert (tiny_model.unembed(final[:, -1]) - expected.repeat(2, 1)).abs().max().item() <= TOL


def test_forward_from_sees_a_changed_residual(tiny_model, tokens):
    inputs = tiny_model.capture_block_inputs(tokens)
    x = inputs.resid_pre[2].clone()
    x[:, -1] += 1.0
    _, cache = tiny_model.run_with_cache(
        tokens,
        [Site("resid_final")],
        hooks=[(Site("resid_pre", 2), lambda t, s: t + (x - inputs.resid_pre[2]))],
    )
    final = tiny_model.forward_from(2, x, inputs)
    torch.testing.assert_close(final, cache[Site("resid_final")], rtol=0, atol=TOL)


def test_forward_from_rejects_wrong_batch(tiny_model, tokens):
    inputs = tiny_model.capture_block_inputs(tokens)
    with pytest.raises(ValueError, match="not a multiple of the captured batch 3"):
        tiny_model.forward_from(0, inputs.resid_pre[0][:2], inputs)


def test_capture_leaves_no_hooks(tiny_model, tokens, assert_clean):
    tiny_model.capture_block_inputs(tokens)
    assert_clean(tiny_model)
