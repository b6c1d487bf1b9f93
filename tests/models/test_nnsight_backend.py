"""The nnsight backend reads the same activations as the TransformerLens backend.

Both backends load the same tiny seeded model (same name and seed -> same weights); sites read
through nnsight proxies must equal the bridge's hook values, and the raw Hugging Face model's
own values (a plain torch hook, the independent check).
"""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import ModelLoadError, SiteError
from interp.core.sites import Site
from interp.models.families import FAMILIES, module_sites
from interp.models.loading import load_model

NAMES = ("tiny-llama", "tiny-gpt2")
Z_MODULE = {"tiny-llama": "model.layers.1.self_attn.o_proj", "tiny-gpt2": "transformer.h.1.attn.c_proj"}


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    name = request.param
    return name, load_model(name), load_model(name, backend="nnsight")


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 5000, (3, 11), generator=g)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_spec_matches(pair):
    _, tl, nn_ = pair
    assert nn_.backend == "nnsight"
    assert nn_.spec == tl.spec


def test_z_layer_and_head_match_transformer_lens(pair, tokens):
    _, tl, nn_ = pair
    sites = [Site("z", layer=1), Site("z", layer=1, head=2)]
    _, ref = tl.run_with_cache(tokens, sites)
    _, got = nn_.run_with_cache(tokens, sites)
    H, d = tl.spec.n_heads, tl.spec.d_head
    assert got[sites[0]].shape == (3, 11, H, d)
    assert got[sites[1]].shape == (3, 11, d)
    for s in sites:
        assert _max_diff(got[s], ref[s]) < 1e-5


def test_z_matches_raw_torch_hook(pair, tokens):
    # Independent of both backends: the input of the output projection, split into heads.
    name, _, nn_ = pair
    seen = {}
    mod = nn_.hf_model.get_submodule(Z_MODULE[name])
    h = mod.register_forward_pre_hook(lambda _m, args: seen.setdefault("z", args[0].detach()))
    try:
        with torch.no_grad():
            nn_.hf_model(tokens)
    finally:
        h.remove()
    _, got = nn_.run_with_cache(tokens, [Site("z", layer=1)])
    want = seen["z"].view(3, 11, nn_.spec.n_heads, nn_.spec.d_head)
    assert _max_diff(got[Site("z", layer=1)], want) < 1e-6


@pytest.mark.parametrize(
    "site",
    ["resid_pre.L0", "resid_pre.L2", "resid_mid.L1", "attn_out.L1", "mlp_out.L3", "resid_post.L1",
     "resid_final", "embed", "resid_post.L2.P4"],
)
def test_other_sites_match_transformer_lens(pair, tokens, site):
    _, tl, nn_ = pair
    s = Site.parse(site)
    _, ref = tl.run_with_cache(tokens, [s])
    _, got = nn_.run_with_cache(tokens, [s])
    assert _max_diff(got[s], ref[s]) < 1e-5


def test_sites_in_any_order_in_one_trace(pair, tokens):
    # nnsight reads in execution order; the backend sorts, so callers need not.
    _, tl, nn_ = pair
    sites = [Site("resid_final"), Site("mlp_out", layer=2), Site("z", layer=3, head=1), Site("resid_pre", layer=0),
             Site("attn_out", layer=2), Site("resid_mid", layer=2), Site("z", layer=3)]
    _, ref = tl.run_with_cache(tokens, sites)
    _, got = nn_.run_with_cache(tokens, sites)
    assert set(got) == set(sites)
    for s in sites:
        assert _max_diff(got[s], ref[s]) < 1e-5


def test_logits_match(pair, tokens):
    _, tl, nn_ = pair
    ref = tl.forward(tokens)
    with torch.no_grad():
        raw = nn_.hf_model(tokens).logits
    assert _max_diff(nn_.forward(tokens), ref) < 1e-5
    assert _max_diff(nn_.forward(tokens), raw) < 1e-6
    logits, _ = nn_.run_with_cache(tokens, [Site("z", layer=1)])
    assert _max_diff(logits, ref) < 1e-5


def test_weights_match(pair, tokens):
    _, tl, nn_ = pair
    assert _max_diff(nn_.W_O(1), tl.W_O(1)) < 1e-6
    logits, cache = nn_.run_with_cache(tokens, [Site("resid_final")])
    assert _max_diff(nn_.unembed(cache[Site("resid_final")]), logits) < 1e-4


def _zero_head(t, _site):
    t = t.clone()
    t[:, :, 1] = 0
    return t


def test_hooks_write_like_the_bridge(pair, tokens):
    """A hook returning a replacement writes it: same logits as the bridge's hook."""
    _, tl, nn_ = pair
    hooks = [(Site("z", layer=1), _zero_head), (Site("resid_pre", layer=2), lambda t, s: t * 0.5)]
    ours, ref = nn_.run_with_hooks(tokens, hooks), tl.run_with_hooks(tokens, hooks)
    assert _max_diff(ours, ref) < 1e-5 and _max_diff(ours, nn_.forward(tokens)) > 1e-3
    logits, cache = nn_.run_with_cache(tokens, [Site("resid_post", layer=2)], hooks=hooks)
    ref_logits, ref_cache = tl.run_with_cache(tokens, [Site("resid_post", layer=2)], hooks=hooks)
    assert _max_diff(logits, ref_logits) < 1e-5
    assert _max_diff(cache[Site("resid_post", layer=2)], ref_cache[Site("resid_post", layer=2)]) < 1e-5


def test_resumes_at_a_block(pair, tokens):
    _, tl, nn_ = pair
    inputs = nn_.capture_block_inputs(tokens)
    assert not inputs.resumes_at_position
    final = nn_.forward_from(1, inputs.resid_pre[1].repeat(2, 1, 1), inputs)
    assert _max_diff(nn_.unembed(final), tl.forward(tokens).repeat(2, 1, 1)) < 1e-4


def test_bad_sites(pair, tokens):
    _, _, nn_ = pair
    with pytest.raises(SiteError, match="out of range"):
        nn_.run_with_cache(tokens, [Site("z", layer=99)])
    with pytest.raises(SiteError, match="out of range"):
        nn_.run_with_cache(tokens, [Site("z", layer=0, head=99)])
    with pytest.raises(SiteError, match="allowed"):
        nn_.run_with_cache(tokens, [Site("attn_scores", layer=0)])


def test_unsupported_family_error():
    from interp.models.zoo import FAMILY_CONFIGS

    with pytest.raises(ModelLoadError, match="supported families: cohere, falcon, gemma, .*, starcoder2"):
        module_sites("mamba")
    assert set(FAMILIES) == set(FAMILY_CONFIGS)


def test_unsupported_family_model_rejected():
    from transformers import OPTConfig, OPTForCausalLM

    from interp.models.backends.nnsight_backend import NNsightModel

    cfg = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                    max_position_embeddings=32, word_embed_proj_dim=16)
    with pytest.raises(ModelLoadError, match="'opt'.*supported families: cohere, .*, gpt2, .*llama"):
        NNsightModel("opt", OPTForCausalLM(cfg), None, weights_sha256=None)
