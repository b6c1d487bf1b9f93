"""Path patching against an independent raw-PyTorch computation on a fresh Hugging Face model.

The reference freezes heads with pre-hooks on `o_proj` and swaps receiver inputs inside a
wrapper of HF's own eager attention function (after `repeat_kv`, so grouped-query receivers
are isolated per query head) - none of interp's hook code is used."""

from __future__ import annotations

import pytest
import torch
import transformers.models.llama.modeling_llama as llama_mod

from interp.analyses.path_patching import Receiver, path_patch_senders, path_patching
from interp.core.errors import InterpError
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models import load_model
from interp.models.smollm2 import load_tokenizer
from interp.models.tiny import build_tiny


@pytest.fixture(scope="module")
def setup():
    tok = load_tokenizer()
    model = load_model("tiny-llama")
    raw = build_tiny("tiny-llama", vocab_size=len(tok), seed=0)
    pb = tokenize_pairs(generate_ioi(3, tok, seed=1, templates=[0]), tok).largest_batch()
    return model, raw, pb


def _raw_path_patch(raw, pb, sender, receivers, freeze_mlps=False):
    layers = raw.model.layers
    H, d = raw.config.num_attention_heads, raw.config.hidden_size // raw.config.num_attention_heads
    group = H // raw.config.num_key_value_heads
    Ls, hs = sender

    def run(tokens, pre=None, post=None):
        handles = []
        for i, layer in enumerate(layers):
            if pre:
                handles.append(layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a, i=i: pre(i, a)))
            if post:
                handles.append(layer.mlp.register_forward_hook(lambda m, a, o, i=i: post(i, o)))
        try:
            with torch.no_grad():
                return raw(tokens).logits[:, -1]
        finally:
            for h in handles:
                h.remove()

    clean_z, clean_mlp, corrupt_z = {}, {}, {}
    run(pb.clean, pre=lambda i, a: clean_z.__setitem__(i, a[0].clone()),
        post=lambda i, o: clean_mlp.__setitem__(i, o.clone()))
    run(pb.corrupt, pre=lambda i, a: corrupt_z.__setitem__(i, a[0].clone()))

    def freeze(i, a):
        if i > Ls:
            return (clean_z[i],)
        if i == Ls:
            z = a[0].clone().view(*a[0].shape[:2], H, d)
            z[:, :, hs] = corrupt_z[i].view(*a[0].shape[:2], H, d)[:, :, hs]
            return (z.view(a[0].shape),)
        return None

    mlp_freeze = (lambda i, o: clean_mlp[i] if i >= Ls else None) if freeze_mlps else None
    recorded = {}
    orig_attn = llama_mod.eager_attention_forward

    def recording_attn(module, query, key, value, *args, **kwargs):
        recorded[module.layer_idx] = (query.clone(), key.clone(), value.clone())
        return orig_attn(module, query, key, value, *args, **kwargs)

    llama_mod.eager_attention_forward = recording_attn
    try:
        logits1 = run(pb.clean, pre=freeze, post=mlp_freeze)
    finally:
        llama_mod.eager_attention_forward = orig_attn
    if receivers[0].input == "logits":
        return logits1

    def patched_attn(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        mine = [r for r in receivers if r.layer == module.layer_idx]
        if not mine:
            return orig_attn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        q_rec, k_rec, v_rec = recorded[module.layer_idx]
        keys = llama_mod.repeat_kv(key, group).clone()  # (b, head, pos, d)
        vals = llama_mod.repeat_kv(value, group).clone()
        query = query.clone()
        for r in mine:
            if r.input == "q":
                query[:, r.head] = q_rec[:, r.head]
            if r.input == "k":
                keys[:, r.head] = k_rec[:, r.head // group]
            if r.input == "v":
                vals[:, r.head] = v_rec[:, r.head // group]
        scores = query @ keys.transpose(2, 3) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, : keys.shape[-2]]
        else:
            T = scores.shape[-1]
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        weights = scores.softmax(-1)
        return (weights @ vals).transpose(1, 2).contiguous(), weights

    llama_mod.eager_attention_forward = patched_attn
    try:
        return run(pb.clean)
    finally:
        llama_mod.eager_attention_forward = orig_attn


def _ld(logits, pb):
    r = torch.arange(len(pb))
    return logits[r, pb.answer_ids] - logits[r, pb.distractor_ids]


RECEIVER_SETS = [
    [Receiver("logits")],
    [Receiver("q", 3, 1)],
    [Receiver("k", 3, 1)],  # GQA: head 1 shares its KV group with head 0, which must not change
    [Receiver("v", 2, 2)],
    [Receiver("q", 3, 0), Receiver("k", 3, 0), Receiver("v", 3, 3), Receiver("k", 2, 1)],
]


@pytest.mark.parametrize("receivers", RECEIVER_SETS, ids=lambda rs: "+".join(map(str, rs)))
@pytest.mark.parametrize("freeze_mlps", [False, True])
def test_matches_raw_reference(setup, receivers, freeze_mlps):
    model, raw, pb = setup
    senders = [(0, 0), (0, 3), (1, 2), (1, 1)]
    ours = path_patch_senders(model, pb, senders, receivers, freeze_mlps=freeze_mlps)
    for i, s in enumerate(senders):
        ref = _ld(_raw_path_patch(raw, pb, s, receivers, freeze_mlps), pb)
        assert torch.allclose(ours[i], ref, atol=1e-5), (s, ours[i], ref)


def test_path_to_logits_differs_from_total_effect(setup):
    """Freezing later heads matters: the path effect is not the head-patching effect."""
    from interp.analyses.patching import sweep_sites
    from interp.core.sites import Site

    model, _, pb = setup
    path = path_patch_senders(model, pb, [(0, 1)], [Receiver("logits")])
    total = sweep_sites(model, pb, [Site("z", layer=0, head=1)], direction="noising")
    assert not torch.allclose(path, total)


def test_no_path_gives_nan_and_map_shape(setup):
    model, _, pb = setup
    vals = path_patch_senders(model, pb, [(3, 0), (2, 1)], [Receiver("q", 2, 0)])
    assert torch.isnan(vals).all()
    pairs = tokenize_pairs(generate_ioi(2, model.tokenizer, seed=0, templates=[0]), model.tokenizer)
    res = path_patching(model, pairs, [Receiver("q", 2, 0)])
    assert res.values.shape == (4, 4) and torch.isnan(res.values[2:]).all() and not torch.isnan(res.values[:2]).any()
    df = res.to_frame()
    assert {"layer", "head", "normalised"} <= set(df.columns)


def test_receiver_errors(setup):
    model, _, pb = setup
    with pytest.raises(InterpError, match="allowed: logits, q, k, v"):
        Receiver("o", 1, 1)
    with pytest.raises(InterpError, match="needs a layer and a head"):
        Receiver("q")
    with pytest.raises(InterpError, match="separate calls"):
        path_patch_senders(model, pb, [(0, 0)], [Receiver("logits"), Receiver("q", 1, 0)])
    with pytest.raises(InterpError, match="outside the model"):
        path_patch_senders(model, pb, [(0, 0)], [Receiver("q", 9, 0)])
    assert Receiver.parse("L3H1.k") == Receiver("k", 3, 1) and str(Receiver("v", 2, 2)) == "L2H2.v"
