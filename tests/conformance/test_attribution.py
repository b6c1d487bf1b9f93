"""Attribution patching (`attribution_patching`) against the same estimate from raw autograd
(reference.py `RawModel.atp`), not against exact patching: denoising, effect =
(a_clean - a_corrupt) . dM/da on the corrupt run, per head z (all positions), per MLP, per
(component, layer, position); and AtP*'s QK fix per head q / k: the head's exact pattern with
its query (keys) from the clean run, computed by the model's own attention function (real mask,
sliding window, softcap, scaling), minus the corrupt pattern, dotted with dM/dpattern."""

from __future__ import annotations

import pytest

from interp.analyses.attribution import attribution_patching

from .support import check, refused_or

_REF: dict[str, dict] = {}


def _ref(family, raw, pb):
    if family not in _REF:
        _REF.clear()
        _REF[family] = raw.atp(pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids)
    return _REF[family]


def _effect(result):
    return result.values - result.corrupt_metric


def test_attribution_heads(family, model, raw, pairs, pb):
    res = refused_or(attribution_patching, model, pairs, residual=False).results["z"]
    ref = _ref(family, raw, pb)
    check(res.corrupt_metric, ref["corrupt_metric"].mean(), f"{family} AtP corrupt metric")
    check(_effect(res), ref["z"].mean(0), f"{family} AtP head z effects (layer, head)")


def test_attribution_mlp(family, model, raw, pairs, pb):
    res = refused_or(attribution_patching, model, pairs, residual=False).results["mlp"]
    check(_effect(res), _ref(family, raw, pb)["mlp"].mean(0), f"{family} AtP MLP effects (layer,)")


def test_attribution_residual(family, model, raw, pairs, pb):
    res = refused_or(attribution_patching, model, pairs, residual=True).results["residual"]
    check(_effect(res), _ref(family, raw, pb)["residual"].mean(0),
          f"{family} AtP residual effects (component, layer, position)")


@pytest.mark.parametrize("which", ["q", "k"])
def test_attribution_qk_fix(family, model, raw, pairs, pb, which):
    res = refused_or(attribution_patching, model, pairs, qk_fix=True, residual=False).results[which]
    check(_effect(res), _ref(family, raw, pb)[which].mean(0), f"{family} AtP* QK-fix {which} effects (layer, head)")
