"""The "uniform" ablation mode (Wu et al.'s retrieval-head masking): the head's pattern becomes
uniform over the causal window, other heads keep theirs, and the logits equal a raw HF Llama
whose q_proj output has that head's slice set to zero (RoPE of a zero query is zero)."""

from __future__ import annotations

import torch

from interp.analyses.ablation import ablated_heads
from interp.core.sites import Site

HEADS = [(0, 2), (1, 0)]


def _tokens(model):
    return model.to_tokens(["When Mary and John went to the store, John gave a drink to"])


def test_masked_heads_attend_uniformly(tiny_model, assert_clean):
    tokens = _tokens(tiny_model)
    sites = [Site("pattern", layer=0), Site("pattern", layer=1)]
    with torch.no_grad():
        _, clean = tiny_model.run_with_cache(tokens, sites)
        with ablated_heads(tiny_model, HEADS, mode="uniform"):
            _, masked = tiny_model.run_with_cache(tokens, sites)
    T = tokens.shape[1]
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    for layer, head in HEADS:
        torch.testing.assert_close(masked[sites[layer]][0, head], uniform, atol=1e-6, rtol=1e-5)
    # heads of layer 0 other than the masked one are untouched (layer 0 sees no changed input)
    other = [h for h in range(tiny_model.spec.n_heads) if h != 2]
    torch.testing.assert_close(masked[sites[0]][0, other], clean[sites[0]][0, other])
    assert not torch.allclose(masked[sites[0]][0, 2], clean[sites[0]][0, 2])
    assert_clean(tiny_model)


def test_uniform_masking_matches_raw_q_proj_zeroing(tiny_models, tokenizer):
    from interp.models.tiny import build_tiny

    tiny_model = tiny_models["tiny-llama"]  # the raw reference zeroes q_proj slices (Llama layout)
    raw_tiny = build_tiny("tiny-llama", vocab_size=len(tokenizer), seed=0)
    tokens = _tokens(tiny_model)
    d = raw_tiny.config.hidden_size // raw_tiny.config.num_attention_heads
    handles = []
    for layer, block in enumerate(raw_tiny.model.layers):
        mine = [h for lay, h in HEADS if lay == layer]

        def hook(_m, _inp, out, mine=mine):
            out = out.clone()
            for h in mine:
                out[..., h * d : (h + 1) * d] = 0
            return out

        if mine:
            handles.append(block.self_attn.q_proj.register_forward_hook(hook))
    try:
        with torch.no_grad():
            want = raw_tiny(input_ids=tokens).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), ablated_heads(tiny_model, HEADS, mode="uniform"):
        got = tiny_model.forward(tokens)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert (tiny_model.forward(tokens) - want).abs().max() > 1e-3  # the masking did something
