"""`task_accuracy` against the raw model's own logits, prompt by prompt."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.accuracy import task_accuracy
from interp.analyses.results import AccuracyResult
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs


@pytest.fixture(scope="module")
def dataset(tokenizer):
    return generate_ioi(5, tokenizer, seed=3)


def test_task_accuracy_matches_raw(tiny_model, raw_tiny, raw_reference, dataset, tokenizer):
    pairs = tokenize_pairs(dataset, tokenizer)
    res = task_accuracy(tiny_model, pairs, dataset)
    assert isinstance(res, AccuracyResult)
    ref = raw_reference(raw_tiny)
    for i, pair in enumerate(dataset):
        clean = torch.tensor([tokenizer(pair.clean, add_special_tokens=False)["input_ids"]])
        corrupt = torch.tensor([tokenizer(pair.corrupt, add_special_tokens=False)["input_ids"]])
        a = tokenizer(pair.answer, add_special_tokens=False)["input_ids"]
        d = tokenizer(pair.distractor, add_special_tokens=False)["input_ids"]
        last = ref.last_logits(clean)[0]
        assert res.clean_logit_diff[i].item() == pytest.approx((last[a] - last[d]).item(), abs=1e-4)
        last_c = ref.last_logits(corrupt)[0]
        assert res.corrupt_logit_diff[i].item() == pytest.approx(
            (last_c[a] - last_c[d]).item(), abs=1e-4
        )
        assert res.clean_answer_prob[i].item() == pytest.approx(
            last.softmax(-1)[a].item(), abs=1e-6
        )
        assert res.clean_top1_is_answer[i].item() == (last.argmax().item() == a[0])
        assert res.top1_tokens[i] == tokenizer.decode([last.argmax().item()])
    assert res.prompts == [p.clean for p in dataset]

    summary = res.summary()
    assert summary["n_prompts"] == 5
    assert summary["top1_accuracy"] == pytest.approx(res.clean_top1_is_answer.float().mean().item())
    assert summary["logit_diff_positive_rate"] == pytest.approx(
        (res.clean_logit_diff > 0).float().mean().item()
    )
    df = res.to_frame()
    assert list(df.columns) == [
        "prompt",
        "clean_logit_diff",
        "corrupt_logit_diff",
        "top1_is_answer",
        "answer_prob",
        "top1_token",
    ]
    assert len(df) == 5
