"""The masking test: matched random heads, and the conditions it runs on a tiny model."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.ablation import ablated_heads, head_means, matched_random_heads
from interp.analyses.retrieval_masking import masking_test, niah_answers
from interp.core.errors import InterpError
from interp.data.needles import build_trials, load_needles


def test_random_heads_match_layers_and_avoid_excluded():
    selected = [(3, 0), (3, 1), (5, 2)]
    exclude = {(3, 0), (3, 1), (5, 2), (7, 7)}
    for seed in range(5):
        got = matched_random_heads(10, 4, selected, exclude, seed)
        assert [layer for layer, _ in got] == [3, 3, 5]
        assert len(set(got)) == 3 and not set(got) & exclude
    assert len({tuple(matched_random_heads(10, 4, selected, exclude, s)) for s in range(10)}) > 1


def test_random_heads_fall_back_to_the_nearest_layer():
    # layer 2 has no free head left: take layer 1 or 3 (the lower one first at equal distance)
    exclude = {(2, h) for h in range(3)}
    got = matched_random_heads(5, 3, [(2, 0)], exclude, seed=0)
    assert got[0][0] == 1
    with pytest.raises(InterpError, match="not enough non-retrieval heads"):
        matched_random_heads(1, 2, [(0, 0), (0, 1)], set(), seed=0)


@pytest.fixture(scope="module")
def trials(tokenizer):
    return build_trials(tokenizer, load_needles()[:2], [40], [0.5])


def test_masking_runs_every_condition(tiny_models, trials, assert_clean):
    model = tiny_models["tiny-llama"]
    heads = [(1, 0), (2, 3)]
    means = head_means(model, (torch.tensor([t.prompt_ids]) for t in trials))
    res = masking_test(model, trials, heads, exclude={(1, 0), (2, 3), (3, 3)}, modes=("uniform", "zero", "mean"),
                       seeds=(0, 1), means=means, max_new_tokens=4)
    c = res.conditions
    assert len(c) == 1 + 3 * (1 + 2)
    assert set(c.condition) == {"none", "retrieval", "random"}
    assert (c[c.condition == "retrieval"]["heads"] == "L1H0 L2H3").all()
    for heads_str in c[c.condition == "random"]["heads"]:
        chosen = [tuple(int(x) for x in h[1:].split("H")) for h in heads_str.split()]
        assert [layer for layer, _ in chosen] == [1, 2] and not {(1, 0), (2, 3), (3, 3)} & set(chosen)
    assert len(res.trials) == len(c) * len(trials)
    s = res.summary()
    assert list(s["mode"]) == ["uniform", "zero", "mean"] and (s["n_seeds"] == 2).all()
    # the masked condition's answers are what the model says under that ablation
    with ablated_heads(model, heads, mode="zero"):
        want = niah_answers(model, trials, max_new_tokens=4)
    got = res.trials[(res.trials.condition == "retrieval") & (res.trials["mode"] == "zero")]
    assert list(got["response"]) == [r for r, _ in want]
    assert_clean(model)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(heads=[]), "no heads to mask"),
    (dict(heads=[(0, 0)], modes=("blur",)), "allowed: zero, mean, uniform"),
    (dict(heads=[(0, 0)], modes=("mean",)), "needs means"),
])
def test_masking_errors(tiny_models, trials, kwargs, message):
    with pytest.raises(InterpError, match=message):
        masking_test(tiny_models["tiny-llama"], trials, **kwargs)
