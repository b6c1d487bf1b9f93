"""Head patching (`patch_heads`, and `sweep_sites` per prompt) against one raw forward per
site: head h's slice of the output projection's input replaced from the source run, at all
positions or at one, denoising and noising; metric: logit difference at the last position."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.patching import patch_heads, sweep_sites
from interp.core.sites import Site

from .support import check, refused_or


def _base_source(pb, direction):
    return (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_head_patching(family, model, raw, pairs, pb, direction):
    res = refused_or(patch_heads, model, pairs, direction=direction)
    base, src = _base_source(pb, direction)
    ref = raw.patch_heads(base, src, pb.answer_ids, pb.distractor_ids, per_position=False).mean(-1)
    check(res.clean_metric, raw.ld(pb.clean, pb.answer_ids, pb.distractor_ids).mean(), f"{family} clean metric")
    check(res.corrupt_metric, raw.ld(pb.corrupt, pb.answer_ids, pb.distractor_ids).mean(), f"{family} corrupt metric")
    check(res.values, ref, f"{family} patch_heads {direction} (layer, head)")


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_head_patching_per_position(family, model, raw, pairs, pb, direction):
    res = refused_or(patch_heads, model, pairs, direction=direction, per_position=True)
    base, src = _base_source(pb, direction)
    ref = raw.patch_heads(base, src, pb.answer_ids, pb.distractor_ids, per_position=True).mean(-1)
    check(res.values, ref, f"{family} patch_heads per position {direction} (layer, head, position)")


def test_sweep_sites_per_prompt(family, model, raw, pb):
    """Per-prompt values, including negative positions and residual sites, in one sweep."""
    L, H = raw.L, raw.H
    sites = [Site("z", layer=layer, head=h) for layer in range(L) for h in range(H)]
    sites += [Site("z", layer=1, head=1, position=p) for p in (0, 5, -1)]
    sites += [Site(c, layer=layer, position=p) for c in ("resid_pre", "attn_out", "mlp_out")
              for layer in range(L) for p in (1, -2)]
    ours = refused_or(sweep_sites, model, pb, sites, direction="denoising")
    src = raw.capture(pb.clean)
    a, d = pb.answer_ids, pb.distractor_ids
    ref = torch.empty(len(sites), len(pb))
    for i, s in enumerate(sites):
        comp = str(s.component)
        pos = slice(None) if s.position is None else s.position
        if comp == "z":
            sl = raw.head_slice(s.head)

            def zfn(li, z, s=s, sl=sl, pos=pos):
                if li != s.layer:
                    return None
                z = z.clone()
                z[:, pos, sl] = src["z"][s.layer][:, pos, sl]
                return z

            ref[i] = raw.ld(pb.corrupt, a, d, z=zfn)
        else:
            ref[i] = raw.patch_site(pb.corrupt, a, d, comp, s.layer, pos, src[comp][s.layer])
    check(ours, ref, f"{family} sweep_sites (site, prompt) [sites: {', '.join(map(str, sites[:3]))}, ...]")
