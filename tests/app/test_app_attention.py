"""`attention_pattern`: one head's pattern, checked against the raw Hugging Face model's own
attention weights (`output_attentions=True`), which share no code with interp's hooks."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.attention import AttentionPatternResult, attention_pattern
from interp.core.errors import InterpError

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def raw_llama(tokenizer):
    from interp.models.tiny import build_tiny

    return build_tiny("tiny-llama", vocab_size=len(tokenizer), seed=0).eval()


@pytest.mark.parametrize("layer, head", [(0, 0), (1, 2), (3, 3)])
def test_pattern_matches_raw_model_attentions(tiny_llama, raw_llama, assert_clean, layer, head):
    res = attention_pattern(tiny_llama, PROMPT, layer, head)
    tokens = tiny_llama.to_tokens(PROMPT)
    with torch.no_grad():
        out = raw_llama(input_ids=tokens.cpu(), output_attentions=True)
    expected = out.attentions[layer][0, head].float()
    assert isinstance(res, AttentionPatternResult)
    assert res.pattern.shape == (tokens.shape[1], tokens.shape[1])
    torch.testing.assert_close(res.pattern, expected, atol=1e-5, rtol=1e-4)
    assert res.tokens == tiny_llama.str_tokens(tokens[0])
    assert_clean(tiny_llama)


def test_rows_sum_to_one_and_are_causal(tiny_llama):
    p = attention_pattern(tiny_llama, PROMPT, 2, 1).pattern
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0]))
    assert torch.all(torch.triu(p, diagonal=1) == 0)


def test_frame_and_top_keys(tiny_llama):
    res = attention_pattern(tiny_llama, PROMPT, 1, 0)
    df = res.to_frame()
    n = len(res.tokens)
    assert len(df) == n * n
    assert list(df.columns[:5]) == ["query", "key", "query_token", "key_token", "weight"]
    last = df[df["query"] == n - 1].sort_values("weight", ascending=False)
    top = res.top_keys(-1, 3)
    assert top["key"].tolist() == last["key"].head(3).tolist()
    assert top["token"].tolist() == [res.tokens[k] for k in top["key"]]
    assert res.label == "L1H0"


def test_token_ids_give_the_same_pattern(tiny_llama):
    ids = tiny_llama.to_tokens(PROMPT)
    a = attention_pattern(tiny_llama, PROMPT, 3, 2).pattern
    torch.testing.assert_close(attention_pattern(tiny_llama, ids[0].tolist(), 3, 2).pattern, a)
    torch.testing.assert_close(attention_pattern(tiny_llama, ids, 3, 2).pattern, a)


@pytest.mark.parametrize(
    "args, message",
    [
        ((PROMPT, 4, 0), "no head L4H0"),
        ((PROMPT, 0, 9), "heads 0..3"),
        (("   ", 0, 0), "empty"),
        ((torch.zeros(2, 5, dtype=torch.long), 0, 0), "one prompt"),
    ],
)
def test_bad_arguments_say_what_is_allowed(tiny_llama, args, message):
    with pytest.raises(InterpError, match=message):
        attention_pattern(tiny_llama, *args)
