"""Temporary hooks and selective caching on the hooked tiny models.

Hooks must be gone after the `with` block however it ends (normal exit, an exception in the
body, an exception raised by a hook inside the forward, a bad site halfway through adding
them), and the model must then compute exactly what it computed before."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import SiteError
from interp.core.hooks import caching_hooks, site_patch_hook, temporary_hooks
from interp.core.sites import Component, Site

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


class Boom(RuntimeError):
    pass


@pytest.fixture(scope="module")
def tokens(tiny_models):
    model = tiny_models["tiny-llama"]
    return model.to_tokens([IOI_PROMPT, "When Alice and Bob went to the park, Bob gave a ring to"])


def _bridge_hook_points(model):
    return [model._hook_dict[name] for name in model._hook_dict]


def test_no_hooks_after_load(tiny_model, assert_clean):
    assert_clean(tiny_model)


def test_hooks_removed_on_normal_exit(tiny_model, tokens, assert_clean):
    before = tiny_model.forward(tokens)
    calls = []
    site = Site("mlp_out", layer=1)
    with tiny_model.hooks([(site, lambda t, s: calls.append(s) or None)]):
        assert tiny_model._hook_dict["blocks.1.hook_mlp_out"]._forward_hooks
        during = tiny_model.forward(tokens)
    assert calls == [site]
    assert torch.equal(during, before)  # a hook returning None changes nothing
    assert_clean(tiny_model)
    assert torch.equal(tiny_model.forward(tokens), before)


def test_hooks_removed_when_body_raises(tiny_model, tokens, assert_clean):
    before = tiny_model.forward(tokens)
    zero = lambda t, s: torch.zeros_like(t)  # noqa: E731
    with pytest.raises(Boom):
        with temporary_hooks(tiny_model, [(Site("attn_out", 0), zero), (Site("z", 2), zero)]):
            tiny_model.forward(tokens)
            raise Boom("body failed")
    assert_clean(tiny_model)
    assert torch.equal(tiny_model.forward(tokens), before)


@pytest.mark.parametrize(
    "site", [Site("z", 1), Site("resid_pre", 2), Site("pattern", 0), Site("resid_final")], ids=str
)
def test_hook_raising_inside_forward_leaves_no_hook(tiny_model, tokens, assert_clean, site):
    before = tiny_model.forward(tokens)
    zero = lambda t, s: torch.zeros_like(t)  # noqa: E731

    def explode(t, s):
        raise Boom(f"hook on {s} failed")

    # A patching hook before the failing one: its effect must not survive either.
    with pytest.raises(Boom):
        with tiny_model.hooks([(Site("mlp_out", 0), zero), (site, explode)]):
            tiny_model.forward(tokens)
    for point in _bridge_hook_points(tiny_model):
        assert not point._forward_hooks and not point._forward_pre_hooks
    assert_clean(tiny_model)
    assert torch.equal(tiny_model.forward(tokens), before)


def test_bad_site_while_adding_removes_earlier_hooks(tiny_model, tokens, assert_clean):
    n = tiny_model.spec.n_layers
    with pytest.raises(SiteError, match="out of range"):
        with tiny_model.hooks(
            [(Site("mlp_out", 0), lambda t, s: None), (Site("z", n), lambda t, s: None)]
        ):
            pass  # pragma: no cover
    assert_clean(tiny_model)


def test_head_out_of_range_on_direct_hook(tiny_model):
    with pytest.raises(SiteError, match="head 99 out of range"):
        with tiny_model.hooks([(Site("z", 0, head=99), lambda t, s: None)]):
            pass  # pragma: no cover


def test_hook_changes_the_output(tiny_model, tokens, assert_clean):
    before = tiny_model.forward(tokens)
    after = tiny_model.run_with_hooks(tokens, [(Site("mlp_out", 3), lambda t, s: t * 0)])
    assert not torch.allclose(after, before)
    assert_clean(tiny_model)


def test_run_with_cache_returns_exactly_the_asked_sites(tiny_model, tokens, assert_clean):
    spec = tiny_model.spec
    b, T = tokens.shape
    sites = [
        Site("embed"),
        Site("resid_pre", 0),
        Site("resid_mid", 1),
        Site("resid_post", 3),
        Site("attn_out", 2),
        Site("mlp_out", 2),
        Site("z", 1),
        Site("q", 1),
        Site("k", 1),
        Site("v", 1),
        Site("pattern", 2),
        Site("resid_final"),
    ]
    logits, cache = tiny_model.run_with_cache(tokens, sites)
    assert set(cache) == set(sites)
    assert logits.shape == (b, T, spec.d_vocab)
    d, H, Hkv, dh = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.d_head
    shapes = {
        Component.Z: (b, T, H, dh),
        Component.Q: (b, T, H, dh),
        Component.K: (b, T, Hkv, dh),
        Component.V: (b, T, Hkv, dh),
        Component.PATTERN: (b, H, T, T),
    }
    for s in sites:
        assert tuple(cache[s].shape) == shapes.get(s.component, (b, T, d)), s
        assert not cache[s].requires_grad
    # The pattern is a distribution over keys, causal.
    p = cache[Site("pattern", 2)]
    torch.testing.assert_close(p.sum(-1), torch.ones(b, H, T))
    assert torch.all(p.triu(1) == 0)
    # Residual bookkeeping: resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out.
    _, c = tiny_model.run_with_cache(
        tokens,
        [Site(n, 1) for n in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")],
    )
    torch.testing.assert_close(
        c[Site("resid_mid", 1)], c[Site("resid_pre", 1)] + c[Site("attn_out", 1)]
    )
    torch.testing.assert_close(
        c[Site("resid_post", 1)], c[Site("resid_mid", 1)] + c[Site("mlp_out", 1)]
    )
    assert_clean(tiny_model)
    assert torch.equal(logits, tiny_model.forward(tokens))


def test_cache_only_keeps_asked_sites():
    store: dict = {}
    hooks = caching_hooks([Site("z", 0, head=1), Site("z", 0, position=2)], store)
    assert [s for s, _ in hooks] == [Site("z", 0), Site("z", 0)]
    t = torch.randn(2, 4, 3, 5)
    for s, fn in hooks:
        assert fn(t, s) is None
    assert set(store) == {Site("z", 0, head=1), Site("z", 0, position=2)}
    assert torch.equal(store[Site("z", 0, head=1)], t[:, :, 1])


@pytest.mark.parametrize(
    "site",
    [
        Site("z", 1, head=3),
        Site("z", 1, position=4),
        Site("z", 2, head=0, position=-1),
        Site("k", 0, head=1),
        Site("v", 3, head=0, position=2),
        Site("q", 2, head=2, position=0),
        Site("pattern", 1, head=2),
        Site("pattern", 1, head=1, position=5),
        Site("resid_pre", 2, position=-1),
        Site("attn_out", 0, position=3),
        Site("embed", position=1),
        Site("resid_final", position=-1),
    ],
    ids=str,
)
def test_head_and_position_sites_select_the_right_slice(tiny_model, tokens, site):
    _, cache = tiny_model.run_with_cache(tokens, [site, site.hook_site])
    whole = cache[site.hook_site]
    idx = [slice(None)] * whole.ndim
    if site.head is not None:
        idx[2 if site.component != Component.PATTERN else 1] = site.head
    if site.position is not None:
        idx[1 if site.component != Component.PATTERN else 2] = site.position
    assert torch.equal(cache[site], whole[tuple(idx)])


def test_z_is_the_o_proj_input_per_head(tiny_model, tokens):
    """hook_z, reshaped back to (batch, pos, head * d_head), is the output projection's input."""
    _, cache = tiny_model.run_with_cache(tokens, [Site("z", 1)])
    hf = tiny_model.hf_model
    o_proj = (
        hf.model.layers[1].self_attn.o_proj
        if hasattr(hf, "model")
        else hf.transformer.h[1].attn.c_proj
    )
    seen = {}
    h = o_proj.register_forward_pre_hook(
        lambda m, args: seen.setdefault("x", args[0].detach().clone())
    )
    try:
        tiny_model.forward(tokens)
    finally:
        h.remove()
    b, T = tokens.shape
    torch.testing.assert_close(cache[Site("z", 1)].reshape(b, T, -1), seen["x"], rtol=0, atol=1e-6)


def test_site_patch_hook_writes_only_the_slice(tiny_model, tokens, assert_clean):
    site = Site("z", 2, head=1, position=3)
    source = torch.full((*tokens.shape, tiny_model.spec.n_heads, tiny_model.spec.d_head), 7.0)
    _, cache = tiny_model.run_with_cache(
        tokens, [Site("z", 2)], hooks=[(site.hook_site, site_patch_hook(site, source))]
    )
    _, clean = tiny_model.run_with_cache(tokens, [Site("z", 2)])
    z, z0 = cache[Site("z", 2)], clean[Site("z", 2)]
    assert torch.all(z[:, 3, 1] == 7.0)
    mask = torch.ones_like(z, dtype=torch.bool)
    mask[:, 3, 1] = False
    assert torch.equal(z[mask], z0[mask])
    assert_clean(tiny_model)


def test_cache_of_a_patched_run_sees_the_patch_downstream(tiny_model, tokens):
    zero = lambda t, s: torch.zeros_like(t)  # noqa: E731
    _, c = tiny_model.run_with_cache(
        tokens, [Site("mlp_out", 1), Site("resid_post", 1)], hooks=[(Site("mlp_out", 1), zero)]
    )
    assert torch.count_nonzero(c[Site("mlp_out", 1)]) == 0
    _, c2 = tiny_model.run_with_cache(tokens, [Site("resid_mid", 1)])
    torch.testing.assert_close(c[Site("resid_post", 1)], c2[Site("resid_mid", 1)])


def test_cache_head_out_of_range_is_a_site_error(tiny_model, tokens, assert_clean):
    with pytest.raises(SiteError, match="out of range"):
        tiny_model.run_with_cache(tokens, [Site("z", 0, head=tiny_model.spec.n_heads)])
    assert_clean(tiny_model)
