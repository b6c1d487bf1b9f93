"""Direct logit attribution (`direct_logit_attribution`) against reference.py `RawModel.dla`:
the per-prompt logit difference, and each head's / MLP's direct contribution at the last
position pushed to the logits with every norm's scale frozen at the actual clean run (the
post-attention / post-MLP norm of Gemma 2/3 and OLMo 2, the final norm), times Granite's
residual multiplier, times the logit scaling (Granite 1/logits_scaling, Cohere logit_scale).
Gemma 2's final softcap is nonlinear: its per-part terms are compared before the softcap,
while the logit difference is the model's (after it)."""

from __future__ import annotations

from interp.analyses.dla import direct_logit_attribution

from .reference import softcap_note
from .support import check, refused_or

_CACHE: dict[str, tuple] = {}


def _both(family, model, raw, pairs, pb):
    if family not in _CACHE:
        _CACHE.clear()
        try:
            ours = direct_logit_attribution(model, pairs)
        except Exception as e:  # re-raised in each test (a refusal or a failure there)
            ours = e
        _CACHE[family] = (ours, raw.dla(pb.clean, pb.answer_ids, pb.distractor_ids))
    ours, ref = _CACHE[family]
    if isinstance(ours, BaseException):
        refused_or(_raise, ours)
    return ours, ref


def _raise(e):
    raise e


def _columns(res, labels):
    missing = [lab for lab in labels if lab not in res.labels]
    assert not missing, f"DLA labels missing: {missing} (have {res.labels})"
    return res.contributions[:, [res.labels.index(lab) for lab in labels]]


def test_dla_logit_diff(family, model, raw, pairs, pb):
    ours, ref = _both(family, model, raw, pairs, pb)
    actual = getattr(ours, "logit_diff", None)
    if actual is None:
        actual = ours.actual
    check(actual, ref["logit_diff"], f"{family} DLA logit difference (the model's)")


def test_dla_heads(family, model, raw, pairs, pb):
    ours, ref = _both(family, model, raw, pairs, pb)
    labels = [f"L{layer}H{h}" for layer in range(raw.L) for h in range(raw.H)]
    check(_columns(ours, labels), ref["heads"].reshape(len(pb), -1),
          f"{family} DLA per-head contributions (prompt, L*H){softcap_note(raw)}")


def test_dla_mlp(family, model, raw, pairs, pb):
    ours, ref = _both(family, model, raw, pairs, pb)
    check(_columns(ours, [f"MLP{layer}" for layer in range(raw.L)]), ref["mlp"],
          f"{family} DLA per-MLP contributions (prompt, layer){softcap_note(raw)}")


def test_dla_parts_sum(family, model, raw, pairs, pb):
    """interp's own parts sum to its logit difference (before a final softcap: to the
    reference's pre-softcap logit difference)."""
    ours, ref = _both(family, model, raw, pairs, pb)
    linear = [i for i, k in enumerate(ours.kinds) if k != "softcap"]
    check(ours.contributions[:, linear].sum(1), ref["pre_softcap_logit_diff"],
          f"{family} sum of DLA parts without the softcap term{softcap_note(raw)}", atol=1e-3, rtol=1e-3)
    # with the 'final_softcap' term (softcapped models), the model's own logit difference
    check(ours.contributions.sum(1), ours.logit_diff, f"{family} sum of all DLA parts", atol=1e-3, rtol=1e-3)
