"""Sites: canonical strings, parse and validation errors, select/assign on tensor shapes."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import InterpError, SiteError
from interp.core.sites import Component, Site, Stack, head_sites, layer_sites

NO_LAYER = {Component.EMBED, Component.RESID_FINAL, Component.OUT}
HEADED = {Component.Z, Component.Q, Component.K, Component.V, Component.PATTERN, Component.CROSS_PATTERN}


def all_sites() -> list[Site]:
    sites = []
    for comp in Component:
        layer = None if comp in NO_LAYER else 3
        sites += [Site(comp, layer), Site(comp, layer, position=7), Site(comp, layer, position=-1)]
        if comp in HEADED:
            sites += [Site(comp, layer, head=5), Site(comp, layer, head=0, position=2)]
        sites += [Site(comp, layer, stack="encoder"), Site(comp, layer, position=1, stack="vision")]
    return sites


@pytest.mark.parametrize("site", all_sites(), ids=str)
def test_canonical_string_round_trips(site):
    text = str(site)
    assert Site.parse(text) == site
    assert str(Site.parse(text)) == text
    assert hash(Site.parse(text)) == hash(site)


def test_canonical_forms():
    assert str(Site("z", layer=3, head=5)) == "z.L3.H5"
    assert str(Site("resid_pre", layer=2, position=7)) == "resid_pre.L2.P7"
    assert str(Site("embed")) == "embed"
    assert str(Site("pattern", layer=0, head=1, position=-1)) == "pattern.L0.H1.P-1"
    assert Site.parse("  mlp_out.L4 ") == Site(Component.MLP_OUT, layer=4)


def test_string_component_is_normalised_to_enum():
    s = Site("attn_out", layer=1)
    assert s.component is Component.ATTN_OUT
    assert s == Site(Component.ATTN_OUT, layer=1)
    assert len({s, Site(Component.ATTN_OUT, layer=1)}) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "z.3",
        "z.L3.H",
        "Z.L3",
        "z.H5.L3",
        "z.L3.P1.H2",
        "z.L-1",
        "resid_pre L2",
        "z.L3.H5.",
        "z.L3.X2",
    ],
)
def test_parse_errors_say_expected_form(text):
    with pytest.raises(SiteError, match="expected '<component>"):
        Site.parse(text)


def test_parse_unknown_component_lists_allowed():
    with pytest.raises(SiteError, match="unknown component 'attn_z'.*allowed: embed, resid_pre"):
        Site.parse("attn_z.L3")


def test_site_error_is_interp_error():
    assert issubclass(SiteError, InterpError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(component="resid_pre", layer=2, head=1), "has no heads"),
        (dict(component="mlp_out", layer=0, head=0), "has no heads"),
        (dict(component="embed", head=0), "has no heads"),
        (dict(component="z", head=1), "needs a layer"),
        (dict(component="resid_pre"), "needs a layer"),
        (dict(component="embed", layer=0), "takes no layer"),
        (dict(component="resid_final", layer=1), "takes no layer"),
        (dict(component="nope", layer=1), "unknown component"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(SiteError, match=message):
        Site(**kwargs)


def test_parse_validates_too():
    with pytest.raises(SiteError, match="has no heads"):
        Site.parse("resid_pre.L2.H1")
    with pytest.raises(SiteError, match="needs a layer"):
        Site.parse("z.H1")


def test_hook_site_drops_head_and_position():
    assert Site("z", 2, head=1, position=4).hook_site == Site("z", 2)
    assert Site("embed", position=0).hook_site == Site("embed")


def test_select_shapes():
    z = torch.randn(2, 5, 4, 8)  # (batch, pos, head, d_head)
    assert Site("z", 0).select(z).shape == (2, 5, 4, 8)
    assert torch.equal(Site("z", 0, head=3).select(z), z[:, :, 3])
    assert torch.equal(Site("z", 0, position=-1).select(z), z[:, -1])
    assert torch.equal(Site("z", 0, head=1, position=2).select(z), z[:, 2, 1])

    pattern = torch.randn(2, 4, 5, 5)  # (batch, head, query, key)
    assert torch.equal(Site("pattern", 0, head=2).select(pattern), pattern[:, 2])
    assert torch.equal(Site("pattern", 0, head=2, position=4).select(pattern), pattern[:, 2, 4])

    resid = torch.randn(2, 5, 16)
    assert torch.equal(Site("resid_pre", 1, position=3).select(resid), resid[:, 3])
    assert torch.equal(Site("embed", position=0).select(resid), resid[:, 0])


def test_assign_replaces_only_the_slice():
    t = torch.zeros(2, 5, 4, 8)
    v = torch.randn(2, 5, 4, 8)
    out = Site("z", 0, head=1, position=3).assign(t, v)
    assert out is not t and torch.count_nonzero(t) == 0  # a copy; the input is untouched
    expected = t.clone()
    expected[:, 3, 1] = v[:, 3, 1]
    assert torch.equal(out, expected)

    whole = Site("z", 0).assign(t, v)
    assert torch.equal(whole, v)

    resid, src = torch.zeros(2, 5, 16), torch.randn(2, 5, 16)
    out = Site("resid_pre", 0, position=-1).assign(resid, src)
    assert torch.equal(out[:, -1], src[:, -1]) and torch.count_nonzero(out[:, :-1]) == 0


def test_assign_broadcasts_value():
    t = torch.zeros(3, 5, 16)
    v = torch.randn(1, 5, 16)
    out = Site("resid_mid", 2, position=1).assign(t, v)
    assert torch.equal(out[:, 1], v[:, 1].expand(3, 16))
    assert torch.count_nonzero(out[:, [0, 2, 3, 4]]) == 0


def test_head_and_layer_sites():
    hs = head_sites("z", 2, 3)
    assert [str(s) for s in hs] == [
        "z.L0.H0",
        "z.L0.H1",
        "z.L0.H2",
        "z.L1.H0",
        "z.L1.H1",
        "z.L1.H2",
    ]
    assert layer_sites(Component.MLP_OUT, 2) == [Site("mlp_out", 0), Site("mlp_out", 1)]


def test_sites_with_and_without_head_sort():
    sites = [
        Site("z", 1, head=2),
        Site("z", 1),
        Site("resid_pre", 0, position=3),
        Site("resid_pre", 0),
    ]
    assert sorted(sites)[0].component in (Component.RESID_PRE, Component.Z)


def test_stacks_default_to_the_decoder_and_prefix_the_others():
    assert Site("z", layer=1) == Site("z", layer=1, stack=Stack.DECODER)
    assert str(Site("resid_post", layer=0, stack="encoder")) == "encoder.resid_post.L0"
    assert Site.parse("decoder.cross_pattern.L1.H0") == Site("cross_pattern", layer=1, head=0)
    assert str(Site.parse("decoder.cross_pattern.L1.H0")) == "cross_pattern.L1.H0"
    assert Site.parse("encoder.out").stack is Stack.ENCODER
    assert Site("resid_pre", layer=2, stack="encoder").hook_site.stack is Stack.ENCODER
    with pytest.raises(SiteError, match="unknown stack 'audio'; allowed: decoder, encoder, vision"):
        Site("resid_pre", layer=0, stack="audio")


@pytest.mark.parametrize("field", ["layer", "head", "position"])
def test_non_integer_fields_are_site_errors_naming_the_field(field):
    kwargs = {"layer": 1, "head": 0, "position": 0, field: "1"}
    with pytest.raises(SiteError, match=f"{field} must be an integer or None, got '1'"):
        Site("z", **kwargs)
    with pytest.raises(SiteError, match=f"{field} must be an integer"):
        Site("z", **{**kwargs, field: True})


def test_position_outside_the_tensor_is_a_site_error_with_the_range():
    resid = torch.randn(2, 5, 16)
    with pytest.raises(SiteError, match=r"position 999 out of range -5\.\.4"):
        Site("resid_pre", 1, position=999).select(resid)
    with pytest.raises(SiteError, match=r"head 7 out of range -4\.\.3"):
        Site("z", 0, head=7).assign(torch.zeros(1, 5, 4, 8), torch.ones(1, 5, 4, 8))
