"""`interp check`: verdicts on tiny models, a deliberately broken model is caught, the CLI's
exit code and the support matrix command."""

from __future__ import annotations

import dataclasses

import pytest

from interp.cli import main
from interp.io.check import check_model
from interp.models import load_model
from interp.models.arch import OutputTail

# `interp check` runs every analysis on a model against its identities: the per-model tier.
pytestmark = pytest.mark.conformance

@pytest.fixture(scope="module")
def gemma2_report():
    return check_model("tiny-gemma2")


def test_every_verdict_on_a_softcapped_windowed_family(gemma2_report):
    r = gemma2_report
    status = {v.analysis: v.status for v in r.verdicts}
    assert r.ok, r.format()
    assert status["DLA"] == "approximate"  # post-attention norms and the final softcap are stated
    assert all(s == "exact" for a, s in status.items() if a != "DLA"), r.format()
    dla = next(v for v in r.verdicts if v.analysis == "DLA")
    assert "final_softcap" in dla.detail and "post-attention norm" in dla.detail
    assert all(why is None for why in r.sites.values())


def test_refusals_carry_the_reason():
    r = check_model("tiny-gpt-neox")
    assert r.ok, r.format()
    atp_star = next(v for v in r.verdicts if v.analysis == "AtP* QK fix")
    assert atp_star.status == "refused" and "q_rot" in atp_star.detail and "never fires" in atp_star.detail


def test_a_wrong_output_tail_is_caught():
    """A model whose tail we get wrong (Granite's logit scale dropped) must not pass: the
    output head check at load refuses every resumed sweep, and check says wrong."""
    model = load_model("tiny-granite")
    model.facts = dataclasses.replace(model.facts, tail=OutputTail(1.0, None))
    model.output_head_error = model._verify_output_head()
    r = check_model("tiny-granite", model=model)
    status = {v.analysis: v.status for v in r.verdicts}
    assert not r.ok
    assert status["output head"] == "wrong"
    assert status["head patching"] == "refused"


@pytest.mark.integration  # every check on a model end to end: about a minute on this CPU
def test_cli_exit_codes_and_support_matrix(capsys):
    assert main(["check", "tiny-llama"]) == 0
    out = capsys.readouterr().out
    assert "result: every analysis is exact" in out and "path patching: k" in out
    assert main(["check", "no/such-model-here"]) == 2
    assert main(["models", "--support"]) == 0
    out = capsys.readouterr().out
    assert "gemma3_text" in out and "DLA" in out and "Not exact, and why" in out
