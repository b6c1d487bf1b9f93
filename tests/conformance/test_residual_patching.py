"""Residual patching (`patch_residual`) per (component, layer, position) against one raw forward
per site: the decoder layer's input (resid_pre), the attention module's output[0] (attn_out)
or the MLP module's output (mlp_out) at one position replaced from the source run."""

from __future__ import annotations

import pytest

from interp.analyses.patching import patch_residual

from .reference import RESIDUAL_COMPONENTS
from .support import check, refused_or


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_residual_patching(family, model, raw, pairs, pb, direction):
    res = refused_or(patch_residual, model, pairs, components=RESIDUAL_COMPONENTS, direction=direction)
    base, src = (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)
    ref = raw.patch_residual(base, src, pb.answer_ids, pb.distractor_ids).mean(-1)
    check(res.values, ref, f"{family} patch_residual {direction} (component, layer, position)")
