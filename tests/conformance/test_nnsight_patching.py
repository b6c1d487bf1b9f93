"""Patching through the nnsight backend (matrix row "nnsight patching"): head patching and
residual patching on `load_family(family, backend="nnsight")` against the same independent raw
computations as the TransformerLens backend's rows (`reference.py`: one raw forward per site,
head h's slice of the output projection's input / the layer input, attention or MLP output at one
position replaced from the source run). The nnsight model writes through module hooks and
resumes at a block by calling the HF decoder layers; nothing here shares code with the reference.
"""

from __future__ import annotations

import pytest

from interp.analyses.patching import patch_heads, patch_residual

from .reference import RESIDUAL_COMPONENTS
from .support import check, refused_or
from .test_nnsight_reads import _nnsight, _raise


def _model(family):
    model = _nnsight(family)
    if isinstance(model, BaseException):
        refused_or(_raise, model)
    return model


def _base_source(pb, direction):
    return (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_nnsight_head_patching(family, raw, pairs, pb, direction):
    model = _model(family)
    res = refused_or(patch_heads, model, pairs, direction=direction)
    base, src = _base_source(pb, direction)
    ref = raw.patch_heads(base, src, pb.answer_ids, pb.distractor_ids, per_position=False).mean(-1)
    check(res.clean_metric, raw.ld(pb.clean, pb.answer_ids, pb.distractor_ids).mean(), f"{family} clean metric")
    check(res.values, ref, f"{family} nnsight patch_heads {direction} (layer, head)")


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_nnsight_residual_patching(family, raw, pairs, pb, direction):
    model = _model(family)
    res = refused_or(patch_residual, model, pairs, components=RESIDUAL_COMPONENTS, direction=direction)
    base, src = _base_source(pb, direction)
    ref = raw.patch_residual(base, src, pb.answer_ids, pb.distractor_ids).mean(-1)
    check(res.values, ref, f"{family} nnsight patch_residual {direction} (component, layer, position)")
