"""The real bundled model: hooked logits equal the raw HF model's, and it solves IOI."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.accuracy import task_accuracy
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import PairDataset, PromptPair, tokenize_pairs

pytestmark = pytest.mark.integration

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_spec(smollm2):
    s = smollm2.spec
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head) == (30, 9, 3, 576, 64)
    assert s.d_vocab == 49152
    assert smollm2.dtype == torch.float32
    assert len(smollm2.weights_sha256) == 64


def test_hooked_logits_equal_raw_on_ioi(smollm2, smollm2_raw, tokenizer):
    pairs = tokenize_pairs(generate_ioi(8, tokenizer, seed=0), tokenizer)
    worst = 0.0
    for pb in pairs.by_length().batches:
        for toks in (pb.clean, pb.corrupt):
            with torch.no_grad():
                expected = smollm2_raw(input_ids=toks).logits
            got = smollm2.forward(toks)
            worst = max(worst, (got - expected).abs().max().item())
    assert worst <= 1e-4, f"max abs logit diff {worst:.3g}"


def test_caching_does_not_change_logits(smollm2, smollm2_raw):
    toks = smollm2.to_tokens(IOI_PROMPT)
    sites = [Site("z", layer) for layer in (0, 14, 29)] + [
        Site("resid_pre", 10),
        Site("pattern", 5),
    ]
    logits, cache = smollm2.run_with_cache(toks, sites)
    assert set(cache) == set(sites)
    assert cache[Site("z", 14)].shape == (1, toks.shape[1], 9, 64)
    with torch.no_grad():
        expected = smollm2_raw(input_ids=toks).logits
    assert (logits - expected).abs().max().item() <= 1e-4


def test_solves_ioi(smollm2):
    toks = smollm2.to_tokens(IOI_PROMPT)
    last = smollm2.forward(toks)[0, -1]
    assert smollm2.tokenizer.decode([last.argmax().item()]) == " Mary"


def test_task_accuracy_on_the_prompt(smollm2, tokenizer):
    ds = PairDataset(
        (
            PromptPair(
                IOI_PROMPT,
                "When Alice and Bob went to the store, Bob gave a drink to",
                " Mary",
                " John",
            ),
        ),
        name="one",
    )
    res = task_accuracy(smollm2, tokenize_pairs(ds, tokenizer), ds)
    assert res.top1_tokens == [" Mary"] and res.accuracy == 1.0
    assert res.clean_logit_diff[0] > 0
