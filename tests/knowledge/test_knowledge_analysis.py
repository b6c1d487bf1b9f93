"""Knowledge-conflict analyses on the tiny random models: last-position path patching equals
the general path patching, rates match an independent raw Hugging Face computation, head-effect
statistics and PH3's conditions and random control."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from interp.analyses.ablation import ablated_heads
from interp.analyses.knowledge import (
    HeadEffects,
    conflict_rates,
    memory_context_heads,
    path_patch_last_position,
)
from interp.analyses.path_patching import Receiver, path_patch_senders
from interp.analyses.ph3 import ph3_pruning, top_heads
from interp.core.errors import InterpError
from interp.data.knowledge import conflict_pairs, load_facts, make_conflicts
from interp.data.pairs import tokenize_pairs


@pytest.fixture(scope="module")
def table():
    return load_facts()


def _items(table, tokenizer, relations=("capital_of", "antonym"), n=12):
    facts = [f for f in table.facts if f.relation in relations]
    return make_conflicts(facts[:n] + facts[-n:], table, tokenizer, seed=0)


def test_last_position_path_patching_equals_general(tiny_model, table, assert_clean):
    items = _items(table, tiny_model.tokenizer, n=10)
    pairs = tokenize_pairs(conflict_pairs(items, tiny_model.tokenizer), tiny_model.tokenizer)
    pb = pairs.largest_batch()
    assert len(pb) >= 2
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    senders = [(layer, h) for layer in range(L) for h in range(H)]
    ours, clean, corrupt = path_patch_last_position(tiny_model, pb, batch_size=5)
    ref = path_patch_senders(tiny_model, pb, senders, [Receiver("logits")])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert (ours - clean).abs().max() > 1e-4  # some head matters
    last = tiny_model.forward(pb.clean)[:, -1]
    r = torch.arange(len(pb))
    torch.testing.assert_close(
        clean, last[r, pb.answer_ids] - last[r, pb.distractor_ids], atol=1e-4, rtol=1e-4
    )
    last_c = tiny_model.forward(pb.corrupt)[:, -1]
    torch.testing.assert_close(
        corrupt, last_c[r, pb.answer_ids] - last_c[r, pb.distractor_ids], atol=1e-4, rtol=1e-4
    )
    assert_clean(tiny_model)


def test_head_effects_cover_every_pair(tiny_models, table):
    model = tiny_models["tiny-llama"]
    items = _items(table, model.tokenizer)
    ds = conflict_pairs(items, model.tokenizer)
    pairs = tokenize_pairs(ds, model.tokenizer)
    eff = memory_context_heads(model, pairs, [p.meta["relation"] for p in ds])
    L, H = model.spec.n_layers, model.spec.n_heads
    assert eff.effects.shape == (L, H, len(ds)) and torch.isfinite(eff.effects).all()
    for pb in pairs.by_length().batches:  # each batch's effects = clean - patched
        patched, clean, _ = path_patch_last_position(model, pb)
        torch.testing.assert_close(eff.effects.view(L * H, -1)[:, pb.indices], clean - patched)
    df = eff.to_frame()
    assert len(df) == L * H and set(df["kind"]) <= {"memory", "context"}
    assert set(eff.by_relation_frame()["relation"]) == {p.meta["relation"] for p in ds}


def test_head_effect_statistics():
    effects = torch.tensor(
        [[[1.0, 2.0, -1.0, 3.0], [-1.0, -2.0, -0.5, 0.5]]]
    )  # (1 layer, 2 heads, 4)
    eff = HeadEffects(effects, ["a", "a", "b", "b"], torch.zeros(4), torch.zeros(4))
    torch.testing.assert_close(eff.mean, torch.tensor([[1.25, -0.75]]))
    torch.testing.assert_close(eff.sign_consistency, torch.tensor([[0.75, 0.75]]))
    torch.testing.assert_close(eff.frac_positive, torch.tensor([[0.75, 0.25]]))
    assert top_heads(eff, "memory", 5) == [(0, 0)] and top_heads(eff, "context", 5) == [(0, 1)]
    by_rel = eff.by_relation_frame().set_index(["head", "relation"])["effect"]
    assert by_rel[(0, "a")] == 1.5 and by_rel[(1, "b")] == 0.0
    assert len(eff.per_prompt_frame()) == 8
    with pytest.raises(InterpError, match="allowed: memory, context"):
        top_heads(eff, "both", 1)


@torch.no_grad()
def _raw_last(raw, model, prompts):
    return torch.stack(
        [raw(input_ids=torch.tensor([model.encode(p)])).logits[0, -1] for p in prompts]
    )


def test_rates_match_raw_model(tiny_models, table):
    from interp.models.tiny import build_tiny

    model = tiny_models["tiny-llama"]
    raw = build_tiny("tiny-llama", vocab_size=len(model.tokenizer), seed=0).eval()
    items = _items(table, model.tokenizer, n=3)[:6]
    last = _raw_last(raw, model, [it.prompt for it in items])
    top = last.argmax(-1).tolist()
    # rig the answers so the outcomes are known: memory, context, other, twice
    rigged = []
    for i, (it, t) in enumerate(zip(items, top, strict=True)):
        other = (t + 1) % last.shape[-1]
        m, c = [(t, other), (other, t), (other, (t + 2) % last.shape[-1])][i % 3]
        rigged.append(replace(it, memory_token=m, context_token=c))
    rates = conflict_rates(model, rigged)
    assert rates.outcome == ["memory", "context", "other"] * 2
    assert rates.memory_rate == rates.context_rate == rates.other_rate == pytest.approx(1 / 3)
    r = torch.arange(6)
    m = torch.tensor([it.memory_token for it in rigged])
    c = torch.tensor([it.context_token for it in rigged])
    torch.testing.assert_close(rates.logit_diff, last[r, m] - last[r, c], atol=1e-4, rtol=1e-4)
    by_rel = rates.by_relation()
    assert by_rel["n_prompts"].sum() == 6 and set(by_rel["relation"]) == {"capital_of", "antonym"}


def test_ph3_conditions(tiny_models, table, assert_clean):
    model = tiny_models["tiny-llama"]
    L, H = model.spec.n_layers, model.spec.n_heads
    g = torch.Generator().manual_seed(0)
    eff = HeadEffects(torch.randn(L, H, 5, generator=g), ["x"] * 5, torch.zeros(5), torch.zeros(5))
    items = _items(table, model.tokenizer, n=2)
    res = ph3_pruning(model, items, eff, table, ks=(2,), n_random=2, seed=0)
    df = res.to_frame()
    summ = res.summary()
    assert len(summ) == 5
    assert list(summ["condition"][:5]) == [
        "none",
        "prune_context",
        "random_context",
        "prune_memory",
        "random_memory",
    ]
    rnd = summ[summ["condition"].str.startswith("random")]
    assert set(rnd["n_seeds"]) == {2} and rnd["n_distinct_sets"].between(1, 2).all()
    allrows = df[df["relation"] == "all"]
    assert len(allrows) == 1 + 2 * 3
    assert allrows["closed_book_accuracy"].notna().all()
    # the 'none' row is the unablated model; a prune row equals ablating its heads by hand
    base = conflict_rates(model, items)
    none = allrows[allrows["condition"] == "none"].iloc[0]
    assert none.memory_rate == base.memory_rate and none.mean_logit_diff == pytest.approx(
        base.summary()["mean_logit_diff"]
    )
    mem2 = top_heads(eff, "memory", 2)
    assert res.memory_heads[:2] == mem2
    with ablated_heads(model, mem2):
        manual = conflict_rates(model, items).summary()["mean_logit_diff"]
    row = allrows[(allrows["condition"] == "prune_memory") & (allrows["k"] == 2)].iloc[0]
    assert row.heads == ", ".join(f"L{a}H{b}" for a, b in mem2)
    assert row.mean_logit_diff == pytest.approx(manual, abs=1e-5)
    # random rows never use a selected head and take the selected heads' layers (where free)
    selected_heads = res.memory_heads + res.context_heads
    selected = {f"L{a}H{b}" for a, b in selected_heads}
    for kind, top in (("memory", res.memory_heads[:2]), ("context", res.context_heads[:2])):
        draws = allrows.loc[allrows["condition"] == f"random_{kind}", "heads"].tolist()
        assert len(draws) == 2
        for heads in draws:
            labels = heads.split(", ")
            pairs_ = [(int(x[1 : x.index("H")]), int(x[x.index("H") + 1 :])) for x in labels]
            assert pairs_ == sorted(pairs_)  # a set of heads has one label
            assert len(set(labels)) == 2 and not set(labels) & selected
            free = {a: H - sum(1 for a2, _ in selected_heads if a2 == a) for a, _ in top}
            if all(free[a] >= sum(1 for a2, _ in top if a2 == a) for a in free):
                assert sorted(int(x[1 : x.index("H")]) for x in labels) == sorted(a for a, _ in top)
    assert_clean(model)
    with pytest.raises(InterpError, match="ks must be"):
        ph3_pruning(model, items, eff, table, ks=(0,))
    with pytest.raises(InterpError, match="held-out"):
        ph3_pruning(model, [], eff, table)
