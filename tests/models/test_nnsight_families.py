"""The nnsight backend reads every site of its family tables on every zoo family, and the values
are the TransformerLens bridge's.

One random model per family (`interp.models.zoo`), loaded twice with the same seed (identical
weights): through the bridge (the default backend) and through nnsight. Every site of the
family's nnsight table, at every layer, is read in one trace and compared with the bridge's
cache of the same sites; logits with the raw Hugging Face model; W_O, W_U and the output head
with the bridge's. Where `interp`'s bridge backend refuses a site (its probe finds a hook that
never fires through torch hooks, or that ignores writes), the value is compared with the
bridge's own TransformerLens cache of the same hook instead, so every site has a bridge
reference.
"""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import SiteError
from interp.core.sites import Component, Site
from interp.models.families import FAMILIES
from interp.models.zoo import FAMILY_CONFIGS, load_family

# 22 families x two loads each: the per-family tier (`make test-conformance`), not the fast one.
pytestmark = pytest.mark.conformance

LAYERLESS = (Component.EMBED, Component.RESID_FINAL)

# What each family offers through nnsight: every component a module carries, except
READABLE = {Component.EMBED, Component.RESID_PRE, Component.Q, Component.K, Component.V, Component.Z,
            Component.ATTN_OUT, Component.PATTERN, Component.RESID_MID, Component.MLP_OUT,
            Component.RESID_POST, Component.RESID_FINAL}
FUSED_QKV = {"gpt2", "gpt_neox", "falcon", "phi3"}  # one qkv module: no q/k/v of their own
PARALLEL = {"gptj", "gpt_neox", "falcon", "phi", "cohere"}  # (as configured in the zoo): no resid_mid
SCALED_SUBLAYERS = {"granite"}  # attn/mlp outputs scaled inline before the add: no attn_out/mlp_out


def _expected(family: str) -> set[Component]:
    out = set(READABLE)
    if family in FUSED_QKV:
        out -= {Component.Q, Component.K, Component.V}
    if family in PARALLEL:
        out.discard(Component.RESID_MID)
    if family in SCALED_SUBLAYERS:
        out -= {Component.ATTN_OUT, Component.MLP_OUT}
    return out


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def pair(request):
    family = request.param
    return family, load_family(family), load_family(family, backend="nnsight")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 5000, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def read(pair, tokens):
    """(sites, nnsight logits, nnsight cache): every table site at every layer, one trace."""
    _, _, nn_ = pair
    sites = [Site(c) if c in LAYERLESS else Site(c, layer=layer)
             for c in nn_.sites_table for layer in ([None] if c in LAYERLESS else range(nn_.spec.n_layers))]
    logits, cache = nn_.run_with_cache(tokens, sites)
    return sites, logits, cache


def _bridge_cache(tl, tokens: torch.Tensor, sites: list[Site]) -> dict[Site, torch.Tensor]:
    from interp.models.backends.tlens import HOOK_NAMES

    ok, refused = [], []
    for s in sites:
        try:
            tl.validate_site(s)
            ok.append(s)
        except SiteError:
            refused.append(s)
    try:
        _, ref = tl.run_with_cache(tokens, ok)
    except RuntimeError:  # a hook the bridge backend accepts but never reaches through torch hooks
        ref = {}
        for s in ok:
            try:
                ref.update(tl.run_with_cache(tokens, [s])[1])
            except RuntimeError:
                refused.append(s)
    if refused:  # the same hooks through TransformerLens' own hook mechanism
        names = {HOOK_NAMES[s.component].format(layer=s.layer): s for s in refused}
        _, tl_cache = tl.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
        for name, s in names.items():
            ref[s] = tl_cache[name]
    return ref


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_every_zoo_family_has_a_table():
    assert set(FAMILY_CONFIGS) <= set(FAMILIES)
    assert {"llama", "gpt2"} <= set(FAMILIES)


def test_coverage(pair):
    family, _, nn_ = pair
    assert set(nn_.sites_table) == _expected(family)


def test_spec_matches(pair):
    _, tl, nn_ = pair
    assert nn_.spec == tl.spec


def test_sites_match_bridge(pair, tokens, read):
    _, tl, nn_ = pair
    sites, _, got = read
    ref = _bridge_cache(tl, tokens, sites)
    H, Hkv, d = nn_.spec.n_heads, nn_.spec.n_kv_heads, nn_.spec.d_head
    shapes = {Component.Z: (2, 10, H, d), Component.Q: (2, 10, H, d), Component.K: (2, 10, Hkv, d),
              Component.V: (2, 10, Hkv, d), Component.PATTERN: (2, H, 10, 10)}
    bad = {}
    for s in sites:
        assert got[s].shape == shapes.get(s.component, (2, 10, nn_.spec.d_model)), s
        diff = _max_diff(got[s], ref[s])
        if not diff < 1e-5:
            bad[str(s)] = diff
    assert not bad, bad


def test_residual_decomposition(pair, read):
    # resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out (sequential blocks),
    # resid_post = resid_pre + attn_out + mlp_out (parallel blocks): the sites are the sublayers'
    # contributions to the residual stream.
    family, _, nn_ = pair
    _, _, c = read
    table = nn_.sites_table
    if Component.ATTN_OUT not in table:
        pytest.skip(f"{family} offers no attn_out")
    for layer in range(nn_.spec.n_layers):
        pre, post = c[Site("resid_pre", layer=layer)], c[Site("resid_post", layer=layer)]
        attn, mlp = c[Site("attn_out", layer=layer)], c[Site("mlp_out", layer=layer)]
        if Component.RESID_MID in table:
            mid = c[Site("resid_mid", layer=layer)]
            assert _max_diff(pre + attn, mid) < 1e-4
            assert _max_diff(mid + mlp, post) < 1e-4
        else:
            assert _max_diff(pre + attn + mlp, post) < 1e-4


def test_logits_match_raw_model(pair, tokens, read):
    _, tl, nn_ = pair
    _, logits, _ = read
    with torch.no_grad():
        raw = nn_.hf_model(tokens, use_cache=False).logits
    assert _max_diff(logits, raw) < 1e-5
    assert _max_diff(nn_.forward(tokens), raw) < 1e-5
    assert _max_diff(tl.forward(tokens), raw) < 1e-4


def test_weights_and_output_head(pair, read):
    _, tl, nn_ = pair
    _, logits, cache = read
    for layer in range(nn_.spec.n_layers):
        assert _max_diff(nn_.W_O(layer), tl.W_O(layer)) < 1e-6
    W, b = nn_.unembed_matrix()
    W_tl, b_tl = tl.unembed_matrix()
    assert _max_diff(W, W_tl) < 1e-6
    assert _max_diff(b if b is not None else torch.zeros_like(W[0]),
                     b_tl if b_tl is not None else torch.zeros_like(W[0])) < 1e-6
    x = cache[Site("resid_final")]
    assert _max_diff(nn_.unembed(x), logits) < 1e-4 * logits.abs().max().item()
    cols = torch.tensor([3, 1, 4])
    assert _max_diff(nn_.unembed(x, cols), logits[..., cols]) < 1e-4 * logits.abs().max().item()
    norm = nn_.final_norm()
    assert norm.kind in ("rms", "layernorm") and norm.weight.shape == (nn_.spec.d_model,)


def test_unoffered_component_refused(pair, tokens):
    family, _, nn_ = pair
    with pytest.raises(SiteError, match="allowed"):
        nn_.run_with_cache(tokens, [Site("attn_scores", layer=0)])
    missing = READABLE - set(nn_.sites_table)
    for comp in missing:
        with pytest.raises(SiteError, match="not readable through nnsight"):
            nn_.validate_site(Site(comp) if comp in LAYERLESS else Site(comp, layer=0))


@pytest.mark.parametrize(
    ("model_type", "flags", "has_mid"),
    [("gpt_neox", {"use_parallel_residual": False}, True), ("falcon", {"parallel_attn": False}, True),
     ("stablelm", {"use_parallel_residual": True}, False)],
)
def test_block_layout_from_config(model_type, flags, has_mid):
    # Families whose block is parallel or sequential by config: resid_mid only when sequential,
    # and then it is the residual between the sublayers.
    from transformers import AutoConfig, AutoModelForCausalLM

    from interp.models import smollm2
    from interp.models.backends.nnsight_backend import NNsightModel

    cfg = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                               max_position_embeddings=32, **flags)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    nn_ = NNsightModel(model_type, hf, smollm2.load_tokenizer(), weights_sha256=None)
    assert (Component.RESID_MID in nn_.sites_table) == has_mid
    toks = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(1))
    sites = [Site(c, layer=1) for c in (Component.RESID_PRE, Component.ATTN_OUT, Component.MLP_OUT,
                                        Component.RESID_POST)]
    sites += [Site("resid_mid", layer=1)] if has_mid else []
    _, c = nn_.run_with_cache(toks, sites)
    pre, attn, mlp, post = (c[s] for s in sites[:4])
    if has_mid:
        mid = c[sites[4]]
        assert _max_diff(pre + attn, mid) < 1e-5
        assert _max_diff(mid + mlp, post) < 1e-5
    else:
        assert _max_diff(pre + attn + mlp, post) < 1e-5
