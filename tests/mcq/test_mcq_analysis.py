"""MCQ analyses on the tiny random Llama (GQA: 4 query heads, 2 KV heads, d_head 16).

Golden values come from the raw Hugging Face model (fresh copy, plain torch hooks): the letter
logits, last-position head patching, and the q/k compression, which the reference recomputes by
hand for the one head (projections, RoPE, softmax) and writes into the output projection's input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses import mcq as A
from interp.core.sites import Site
from interp.data.mcq import generate_mcq
from interp.data.pairs import tokenize_pairs

HEADS = [(1, 0), (2, 3)]


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["tiny-llama"]


@pytest.fixture(scope="module")
def raw(tokenizer):
    from interp.models.tiny import build_tiny

    hf = build_tiny("tiny-llama", vocab_size=len(tokenizer), seed=0)
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf


@pytest.fixture(scope="module")
def data(model):
    ds = generate_mcq(10, model.tokenizer, seed=0)
    return ds, tokenize_pairs(ds, model.tokenizer)


@pytest.fixture(scope="module", params=["labels", "all"])
def subspaces(request, model, data):
    ds, pairs = data
    return A.fit_head_subspaces(model, pairs, ds, HEADS, key_positions=request.param)


def test_projection_matches_an_independent_svd():
    x = (torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
         @ torch.diag(torch.tensor([5.0, 3, 2, 1, 0.5, 0.1])))
    sub = A.fit_subspace(x)
    xn = x.numpy().astype(np.float64)
    mu = xn.mean(0)
    _, s, vt = np.linalg.svd(xn - mu)
    for r in (1, 2, 4):
        expect = mu + (xn - mu) @ vt[:r].T @ vt[:r]
        np.testing.assert_allclose(sub.project(x, r).numpy(), expect, atol=1e-4)
        assert sub.explained_variance(r) == pytest.approx(float((s[:r] ** 2).sum() / (s**2).sum()), rel=1e-5)
    assert sub.project(x, 6) is x  # full rank: untouched, not recomputed
    torch.testing.assert_close(sub.project(x, 0), sub.mean.expand_as(x))
    assert sub.explained_variance(6) == 1.0


@pytest.mark.parametrize("fmt", ["content_letter", "letter"])
@pytest.mark.parametrize("random_labels", [False, True])
def test_label_positions_point_at_the_label_tokens(model, fmt, random_labels):
    ds = generate_mcq(8, model.tokenizer, seed=2, fmt=fmt, random_labels=random_labels)
    pairs = tokenize_pairs(ds, model.tokenizer)
    for pb in pairs.by_length().batches:
        pos = A.label_positions(model.tokenizer, ds, pb)
        for row, i in enumerate(pb.indices):
            toks = model.str_tokens(pb.clean[row, pos[row]])
            assert toks == ds[i].meta["labels"]
            assert (pos[row] < pb.clean.shape[1] - 1).all()


def test_letter_logits_equal_the_raw_model(model, raw, data):
    ds, pairs = data
    acc = A.mcq_accuracy(model, pairs, ds)
    ids, correct = A.letter_ids(model.tokenizer, ds)
    for pb in pairs.by_length().batches:
        with torch.no_grad():
            last = raw(input_ids=pb.clean).logits[:, -1]
        torch.testing.assert_close(acc.letter_logits[pb.indices], last.gather(1, ids[pb.indices]), atol=1e-4, rtol=1e-4)
    assert torch.equal(acc.correct, correct)
    s = acc.summary()
    assert s["n_prompts"] == len(ds) and 0 <= s["accuracy"] <= 1 and s["chance"] == 0.25
    assert len(acc.to_frame()) == len(ds)


def test_full_rank_is_exact_and_low_ranks_change_the_metric(model, data, subspaces, assert_clean):
    ds, pairs = data
    d = model.spec.d_head
    res = A.compress_qk(model, {"normal": (ds, pairs)}, subspaces, [0, 1, d])
    base = res.baseline_logit_diff[0]
    full = res.letter_logit_diff[:, :, 2, 0]
    assert torch.equal(full, base.expand_as(full))  # bit-for-bit
    assert torch.equal(res.accuracy[:, :, 2, 0], res.baseline_accuracy[0].expand_as(full))
    for ri in (0, 1):
        assert (res.letter_logit_diff[:, :, ri, 0] != base).all()
    df = res.to_frame()
    assert len(df) == len(HEADS) * 3 * 3 and set(df["variant"]) == {"q", "k", "qk"}
    assert df.loc[df["rank"] == d, "share_logit_diff"].eq(1.0).all()
    assert_clean(model)


def test_key_path_reproduces_the_model_at_full_rank(model, data, subspaces):
    """Recomputing the head's scores from its rotated query and the (uncompressed) rotated keys
    gives back the model's own scores: the RoPE, scale and GQA indexing are right."""
    ds, pairs = data
    for b in A.prepare_batches(model, pairs, ds):
        base = A._evaluate(model, b, 0, [])[0]
        for head in HEADS:
            hs = subspaces[head]
            hooks = A.compression_hooks(model, b, hs, "k", model.spec.d_head, force_keys=True)
            assert len(hooks) == 2
            torch.testing.assert_close(A._evaluate(model, b, hs.layer, hooks)[0], base, atol=1e-5, rtol=1e-5)


def _raw_compressed_letter_diff(raw, pb, ids, correct, hs, variant, rank, label_pos):
    """Independent: the head's last-position output recomputed by hand from the raw model's
    projections with q and/or k compressed, written into o_proj's input; per-prompt letter diff."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn = raw.model.layers[hs.layer].self_attn
    store = {}

    def capture(_m, args, kwargs):
        store["x"] = kwargs["hidden_states"].clone()

    h = attn.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            raw(input_ids=pb.clean)
    finally:
        h.remove()
    x = store["x"]
    b, T, _ = x.shape
    dh = attn.head_dim
    q = attn.q_proj(x).view(b, T, -1, dh)[:, :, hs.head].clone()
    k = attn.k_proj(x).view(b, T, -1, dh)[:, :, hs.kv_head].clone()
    v = attn.v_proj(x).view(b, T, -1, dh)[:, :, hs.kv_head]
    if "q" in variant:
        q[:, -1] = hs.q.mean + ((q[:, -1] - hs.q.mean) @ hs.q.basis[:rank].T) @ hs.q.basis[:rank]
    if "k" in variant:
        rows = torch.arange(b).unsqueeze(1)
        sel = label_pos if label_pos is not None else torch.arange(T).expand(b, T)
        kk = k[rows, sel]
        k[rows, sel] = hs.k.mean + ((kk - hs.k.mean) @ hs.k.basis[:rank].T) @ hs.k.basis[:rank]
    cos, sin = raw.model.rotary_emb(x, torch.arange(T).unsqueeze(0))
    q_rot, k_rot = apply_rotary_pos_emb(q.unsqueeze(1), k.unsqueeze(1), cos, sin)
    scores = (q_rot[:, 0, -1:] @ k_rot[:, 0].transpose(-1, -2)) * attn.scaling  # (b, 1, T)
    z = (scores.softmax(-1) @ v)[:, 0]  # (b, dh)

    def pre(_m, args):
        y = args[0].clone()
        y[:, -1, hs.head * dh:(hs.head + 1) * dh] = z
        return (y,)

    h = attn.o_proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            last = raw(input_ids=pb.clean).logits[:, -1]
    finally:
        h.remove()
    letter = last.gather(1, ids)
    r = torch.arange(b)
    return letter[r, correct] - (letter.sum(-1) - letter[r, correct]) / 3


@pytest.mark.parametrize("variant", ["q", "k", "qk"])
def test_compression_equals_an_independent_raw_computation(model, raw, data, subspaces, variant):
    ds, pairs = data
    ids, correct = A.letter_ids(model.tokenizer, ds)
    res = A.compress_qk(model, {"normal": (ds, pairs)}, subspaces, [0, 2], variants=[variant])
    for hi, head in enumerate(HEADS):
        hs = subspaces[head]
        for ri, rank in enumerate((0, 2)):
            total = torch.zeros(())
            for pb in pairs.by_length().batches:
                pos = A.label_positions(model.tokenizer, ds, pb) if hs.key_positions == "labels" else None
                total += _raw_compressed_letter_diff(raw, pb, ids[pb.indices], correct[pb.indices], hs,
                                                     variant, rank, pos).sum()
            expect = total / len(ds)
            torch.testing.assert_close(res.letter_logit_diff[hi, 0, ri, 0], expect, atol=1e-4, rtol=1e-4)


def test_key_compression_leaves_the_other_heads_of_the_kv_group_alone(model, data, subspaces, assert_clean):
    ds, pairs = data
    b = A.prepare_batches(model, pairs, ds)[0]
    layer, head = HEADS[0]
    hs = subspaces[(layer, head)]
    group = model.spec.n_heads // model.spec.n_kv_heads
    mates = [h for h in range(model.spec.n_heads) if h // group == hs.kv_head and h != head]
    assert mates
    tokens = b.pb.clean
    _, base = model.run_with_cache(tokens, [Site("pattern", layer)])
    hooks = A.compression_hooks(model, b, hs, "k", 0)
    _, comp = model.run_with_cache(tokens, [Site("pattern", layer)], hooks=hooks)
    p0, p1 = base[Site("pattern", layer)], comp[Site("pattern", layer)]
    for h in mates:
        assert torch.equal(p0[:, h], p1[:, h])
    assert torch.equal(p0[:, head, :-1], p1[:, head, :-1])  # only the last query row changes
    assert not torch.allclose(p0[:, head, -1], p1[:, head, -1])
    assert_clean(model)


def test_last_position_head_patching_equals_the_raw_loop(model, raw, raw_reference, data):
    ds, pairs = data
    res = A.patch_heads_last_position(model, pairs)
    ref = raw_reference(raw)
    L, H = model.spec.n_layers, model.spec.n_heads
    expect = torch.zeros(L, H)
    for pb in pairs.by_length().batches:
        cache: dict = {}
        for layer in range(L):
            for h in range(H):
                expect[layer, h] += ref.patch_metric(pb.corrupt, pb.clean, pb.answer_ids, pb.distractor_ids, "z",
                                                     layer, h, -1, source_cache=cache).sum()
    torch.testing.assert_close(res.values, expect / len(ds), atol=1e-4, rtol=1e-4)
    assert res.axes == ("layer", "head") and res.n_prompts == len(ds)
