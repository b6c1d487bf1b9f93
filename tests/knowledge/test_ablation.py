"""Head ablation (`interp.analyses.ablation`) against an independent raw-PyTorch computation: a
forward pre-hook on the raw Hugging Face model's output projection that overwrites the head's
slice of its input (zero, or the mean of that slice captured with another pre-hook)."""

from __future__ import annotations

import re

import pytest
import torch

from interp.analyses.ablation import ABLATION_MODES, ablated_heads, ablation_hooks, head_means
from interp.core.errors import InterpError
from interp.core.sites import Site

PROMPT = "When Mary and John went to the store, John gave a drink to"

HEADS = [(0, 1), (1, 0), (1, 3)]


def _o_projs(raw):
    if hasattr(raw, "model"):
        return [layer.self_attn.o_proj for layer in raw.model.layers]
    return [block.attn.c_proj for block in raw.transformer.h]


def _d_head(raw) -> int:
    return raw.config.hidden_size // raw.config.num_attention_heads


@torch.no_grad()
def _raw_ablated_logits(raw, tokens, heads, values=None):
    """values[(layer, head)] = the (d_head,) vector written into the slice (None: zeros)."""
    d = _d_head(raw)
    handles = []
    for layer, proj in enumerate(_o_projs(raw)):
        mine = [h for (lay, h) in heads if lay == layer]
        if not mine:
            continue

        def pre(_m, args, layer=layer, mine=mine):
            x = args[0].clone()  # (batch, pos, n_heads * d_head)
            for h in mine:
                x[..., h * d : (h + 1) * d] = 0 if values is None else values[(layer, h)]
            return (x, *args[1:])

        handles.append(proj.register_forward_pre_hook(pre))
    try:
        return raw(input_ids=tokens).logits
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _raw_slice_means(raw, tokens, heads):
    d, store = _d_head(raw), {}
    handles = [
        proj.register_forward_pre_hook(
            lambda _m, args, layer=layer: store.__setitem__(layer, args[0].clone())
        )
        for layer, proj in enumerate(_o_projs(raw))
    ]
    try:
        raw(input_ids=tokens)
    finally:
        for h in handles:
            h.remove()
    return {
        (lay, h): store[lay][..., h * d : (h + 1) * d].reshape(-1, d).mean(0) for lay, h in heads
    }


def _tokens(model):
    return model.to_tokens([PROMPT, PROMPT.replace("Mary", "Anna")])


def test_zero_ablation_matches_raw_o_proj_prehook(tiny_model, raw_tiny, assert_clean):
    tokens = _tokens(tiny_model)
    with torch.no_grad():
        plain = tiny_model.forward(tokens)
        with ablated_heads(tiny_model, HEADS):
            ours = tiny_model.forward(tokens)
    ref = _raw_ablated_logits(raw_tiny, tokens, HEADS)
    assert (ours - plain).abs().max() > 1e-3  # the ablation does something
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert_clean(tiny_model)
    torch.testing.assert_close(tiny_model.forward(tokens), plain)  # hooks are gone


def test_mean_ablation_matches_raw_means(tiny_model, raw_tiny, assert_clean):
    tokens = _tokens(tiny_model)
    means = head_means(tiny_model, [tokens[:1], tokens[1:]])
    ref_means = _raw_slice_means(raw_tiny, tokens, HEADS)
    for (layer, head), v in ref_means.items():
        torch.testing.assert_close(means[layer, head], v, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), ablated_heads(tiny_model, HEADS, mode="mean", means=means):
        ours = tiny_model.forward(tokens)
    torch.testing.assert_close(
        ours, _raw_ablated_logits(raw_tiny, tokens, HEADS, ref_means), atol=1e-4, rtol=1e-4
    )
    assert_clean(tiny_model)


def test_last_position_means(tiny_model):
    tokens = _tokens(tiny_model)
    _, cache = tiny_model.run_with_cache(tokens, [Site("z", layer=1)])
    z = next(iter(cache.values()))  # (batch, pos, head, d_head)
    means = head_means(tiny_model, [tokens], position=-1)
    torch.testing.assert_close(means[1], z[:, -1].mean(0), atol=1e-5, rtol=1e-5)


def test_hooks_removed_when_the_block_raises(tiny_model, assert_clean):
    with pytest.raises(RuntimeError, match="boom"), ablated_heads(tiny_model, HEADS):
        raise RuntimeError("boom")
    assert_clean(tiny_model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(heads=[(0, 0)], mode="uniformly"), "allowed: " + ", ".join(ABLATION_MODES)),
        (dict(heads=[(99, 0)]), "outside"),
        (dict(heads=[(0, 99)]), "outside"),
        (dict(heads=[("a", 0)]), "(layer, head) pair"),
        (dict(heads=[(0, 0)], mode="mean"), "needs means"),
        (
            dict(heads=[(0, 0)], mode="mean", means=torch.zeros(1, 2, 3)),
            "expected (layer, head, d_head)",
        ),
        (dict(heads=[(0, 0)], means=torch.zeros(4, 4, 16)), "only used by mode 'mean'"),
    ],
)
def test_bad_arguments(tiny_models, kwargs, message):
    with pytest.raises(InterpError, match=re.escape(message)):
        ablation_hooks(tiny_models["tiny-llama"], **kwargs)


def test_empty_head_list_changes_nothing(tiny_models):
    model = tiny_models["tiny-llama"]
    tokens = _tokens(model)
    with torch.no_grad():
        plain = model.forward(tokens)
        with ablated_heads(model, []):
            torch.testing.assert_close(model.forward(tokens), plain)
    with pytest.raises(InterpError, match="no token batches"):
        head_means(model, [])
