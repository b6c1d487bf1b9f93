"""Retrieval scores (Wu et al. 2024) against an independent computation on a raw Hugging Face
model: no key/value cache, one full forward per decoding step with `output_attentions=True`,
the argmax key of every head's last row, and the copy check written out again here. The
teacher-forced scorer must equal the greedy one when it is forced on the greedy answer."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.retrieval import (
    RetrievalResult,
    _copy_hits,
    retrieval_scores,
    score_greedy,
    score_teacher_forced,
)
from interp.core.errors import InterpError
from interp.data.needles import Needle, NeedleTrial, build_trials

NEEDLE = Needle("The password for the old library computer is purple elephant seven.",
                "What is the password for the old library computer?", "purple elephant seven")


@pytest.fixture(scope="module")
def trial(tokenizer):
    return build_trials(tokenizer, [NEEDLE], [60], [0.5])[0]


def _copying_trial(model, trial: NeedleTrial) -> NeedleTrial:
    """A trial a random model copies from: half of the prompt is one token X repeated, where X
    is the token the model produces after that prompt (found by iterating), and the whole prompt
    is the 'needle span'; heads whose argmax key holds X then score."""
    token = trial.prompt_ids[-1]
    for _ in range(10):
        ids = trial.prompt_ids[:30] + (token,) * 30
        t = NeedleTrial(ids, (0, len(ids)), 0, trial.needle, trial.context_length, trial.depth)
        nxt = score_greedy(model, t, max_new_tokens=1, stops=set()).output_ids[0]
        if nxt == token:
            return t
        token = nxt
    raise AssertionError("no token the model repeats after itself")


@torch.no_grad()
def _raw_greedy(raw, trial: NeedleTrial, max_new: int, stops: set[int]):
    ids = list(trial.prompt_ids)
    n_prompt, (start, end) = len(ids), trial.span
    L, H = raw.config.num_hidden_layers, raw.config.num_attention_heads
    score, keys, out = torch.zeros(L, H), [], []
    for _ in range(max_new):
        res = raw(input_ids=torch.tensor([ids]), output_attentions=True)
        token = int(res.logits[0, -1].argmax())
        step = torch.stack([a[0, :, -1].argmax(-1) for a in res.attentions])  # (layer, head)
        keys.append(step)
        for layer in range(L):
            for head in range(H):
                k = int(step[layer, head])
                if start <= k < end and k < n_prompt and trial.prompt_ids[k] == token:
                    score[layer, head] += 1 / (end - start)
        out.append(token)
        if token in stops:
            break
        ids.append(token)
    return score, torch.stack(keys, -1), tuple(out)


def test_greedy_scores_match_raw_decoding(tiny_model, raw_tiny, trial, assert_clean):
    t = _copying_trial(tiny_model, trial)
    stops: set[int] = set()  # decode all 6 steps (a random model's first token is often a newline)
    got = score_greedy(tiny_model, t, max_new_tokens=6, chunk_size=16, stops=stops)
    want_scores, want_keys, want_out = _raw_greedy(raw_tiny, t, 6, stops)
    assert want_scores.sum() > 0  # the check below compares real copies, not two zero maps
    assert got.output_ids == want_out
    assert torch.equal(got.keys, want_keys)
    torch.testing.assert_close(got.scores, want_scores)
    assert_clean(tiny_model)


@pytest.mark.parametrize("query_chunk", [1, 3, 64])
def test_teacher_forced_equals_greedy_on_the_greedy_answer(tiny_model, trial, query_chunk):
    t = _copying_trial(tiny_model, trial)
    greedy = score_greedy(tiny_model, t, max_new_tokens=6, chunk_size=32, stops=set())
    assert greedy.scores.sum() > 0
    forced, predicted = score_teacher_forced(tiny_model, t, greedy.output_ids, chunk_size=7, query_chunk=query_chunk)
    assert predicted == greedy.output_ids  # greedy reproduces its own answer
    assert torch.equal(forced.keys, greedy.keys)
    torch.testing.assert_close(forced.scores, greedy.scores)


def test_prefill_chunk_size_does_not_change_scores(tiny_model, trial):
    t = _copying_trial(tiny_model, trial)
    a = score_greedy(tiny_model, t, max_new_tokens=4, chunk_size=5, stops=set())
    b = score_greedy(tiny_model, t, max_new_tokens=4, chunk_size=1000, stops=set())
    assert a.output_ids == b.output_ids and torch.equal(a.keys, b.keys)


def test_copy_hits_counts_span_and_token():
    prompt = torch.tensor([5, 6, 7, 8, 9])
    keys = torch.tensor([[[1, 2], [3, 0]]])  # (layer 1, head 2, rows 2)
    produced = torch.tensor([6, 8])
    hits = _copy_hits(keys, produced, prompt, (1, 4))
    # head 0: row 0 key 1 holds 6 = produced (hit); row 1 key 2 holds 7 != 8 (miss)
    # head 1: row 0 key 3 holds 8 != 6 (miss); row 1 key 0 is outside the span
    assert hits.tolist() == [[1.0, 0.0]]


def test_result_aggregates_kept_trials_only():
    import pandas as pd

    per = torch.zeros(3, 2, 2)
    per[0, 1, 1], per[1, 1, 1], per[2, 0, 0] = 0.5, 0.3, 1.0
    trials = pd.DataFrame({"kept": [True, True, False]})
    res = RetrievalResult("greedy", per, trials)
    assert res.n_kept == 2
    torch.testing.assert_close(res.scores, torch.tensor([[0.0, 0.0], [0.0, 0.4]]))
    assert res.retrieval_heads(0.1) == [(1, 1)] and res.ranked()[0] == (1, 1)
    assert len(res.to_frame()) == 4


def test_scorer_errors(tiny_model, trial):
    with pytest.raises(InterpError, match="allowed: greedy, teacher_forced"):
        retrieval_scores(tiny_model, [trial], scorer="beam")
    with pytest.raises(InterpError, match="one target"):
        retrieval_scores(tiny_model, [trial], scorer="teacher_forced")
    with pytest.raises(InterpError, match="no needle trials"):
        retrieval_scores(tiny_model, [])
    bad = NeedleTrial(trial.prompt_ids, (5, 10**6), 0, trial.needle, 1, 0.5)
    with pytest.raises(InterpError, match="outside the prompt"):
        score_greedy(tiny_model, bad)
