"""Edge attribution on the tiny Llama of the conformance zoo (grouped-query attention): the graph,
circuit evaluation's end points, EAP = exact patching on a model made linear, EAP-IG converging,
mean ablation against a direct computation, and the refusals of bad input.

Exact edge patching itself is checked against a raw computation per family in
tests/conformance/test_edges.py."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.edges import build_graph, edge_graph, edge_scores, evaluate_circuits
from interp.analyses.patching import baseline_metrics
from interp.core.errors import InterpError
from interp.core.metrics import get_metric
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import PairBatch, TokenizedPairs, tokenize_pairs


@pytest.fixture(scope="module")
def model():
    from interp.models.zoo import load_family

    return load_family("llama")


@pytest.fixture(scope="module")
def pairs(tokenizer):
    return tokenize_pairs(generate_ioi(4, tokenizer, seed=1, templates=[0]), tokenizer)


@pytest.fixture(scope="module")
def exact(model, pairs):
    return edge_scores(model, pairs, method="exact")


def test_graph_counts_and_names():
    g = build_graph(30, 9)  # SmolLM2-135M
    print(f"SmolLM2-135M edge graph: {len(g)} edges, {len(g.nodes)} nodes")
    # heads of layer L: 3 inputs x (1 + 10 L) senders; MLP L: 1 + 10 L + 9; logits: 301
    assert len(g) == sum(27 * (1 + 10 * L) + 10 * L + 10 for L in range(30)) + 301 == 123211
    small = build_graph(2, 2)
    names = [small.edge_name(i) for i in range(len(small))]
    assert names[:4] == ["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->a0.h1<q>"]
    assert "a0.h1->m0" in names and "a1.h0->m1" in names and "m0->a1.h1<v>" in names and "m1->logits" in names
    assert "a1.h0->a1.h1<q>" not in names and "m1->m1" not in names
    assert all(small.index(nm) == i for i, nm in enumerate(names))
    with pytest.raises(InterpError, match="no edge"):
        small.index("a5.h0->logits")


def test_evaluate_all_edges_is_clean_and_none_is_corrupt(model, pairs):
    g = edge_graph(model)
    keep = torch.stack([torch.ones(len(g), dtype=torch.bool), torch.zeros(len(g), dtype=torch.bool)])
    got = evaluate_circuits(model, pairs, g, keep)
    m = get_metric("logit_diff")
    clean, corrupt = (torch.cat(x) for x in zip(*(baseline_metrics(model, pb, m) for pb in pairs.batches),
                                                 strict=True))
    assert got[0] == pytest.approx(float(clean.mean()), abs=1e-5)
    assert got[1] == pytest.approx(float(corrupt.mean()), abs=1e-5)
    assert abs(float(clean.mean() - corrupt.mean())) > 1e-3  # the two ends differ


def test_evaluate_one_edge_ablated_is_exact_patching(model, pairs, exact):
    """With every edge but one kept, the circuit's metric is the clean metric plus that edge's
    exact patching effect (an independent path: one swapped receiver, no current senders)."""
    g = edge_graph(model)
    lay = g.layout
    picks = [g.index(nm) for nm in ("a0.h1->logits", "a0.h2->m1", "m0->a2.h1<q>", "a1.h0->a2.h3<k>",
                                     "input->a1.h2<v>")]
    keep = torch.ones(len(picks), len(g), dtype=torch.bool)
    for c, e in enumerate(picks):
        keep[c, e] = False
    got = evaluate_circuits(model, pairs, g, keep, batch_size=8)
    clean = evaluate_circuits(model, pairs, g, torch.ones(1, len(g), dtype=torch.bool))[0]
    assert torch.allclose(got - clean, exact.scores[picks], atol=1e-5), (got - clean, exact.scores[picks])
    assert lay.n_receivers == len(g.receiver_spans())


def test_circuit_of_one_edge_input_to_logits(model, pairs):
    """Only input -> logits kept: everything else runs on corrupt values, so the logits read the
    corrupt final residual with the input embedding's corrupt part swapped for the clean one (the
    corrupt prompts here also differ in their last token, so the swap matters)."""
    g = edge_graph(model)
    pb = pairs.batches[0]
    corrupt = pb.corrupt.clone()
    corrupt[:, -1] = (corrupt[:, -1] + 7) % model.spec.d_vocab
    pairs = TokenizedPairs([PairBatch(pb.clean, corrupt, pb.answer_ids, pb.distractor_ids, pb.indices, pb.key)],
                           len(pb))
    keep = torch.zeros(1, len(g), dtype=torch.bool)
    keep[0, g.index("input->logits")] = True
    got = evaluate_circuits(model, pairs, g, keep)
    sites = [Site("resid_pre", layer=0), Site("resid_final", position=-1)]
    want, n = 0.0, 0
    for pb in pairs.batches:
        (_, c), (_, x) = (model.run_with_cache(t, sites) for t in (pb.clean, pb.corrupt))
        final = x[sites[1]] + c[sites[0]][:, -1] - x[sites[0]][:, -1]
        logits = model.unembed(final)
        r = torch.arange(len(pb))
        want += float((logits[r, pb.answer_ids] - logits[r, pb.distractor_ids]).sum())
        n += len(pb)
    assert float(got[0]) == pytest.approx(want / n, abs=1e-5)
    empty = evaluate_circuits(model, pairs, g, torch.zeros(1, len(g), dtype=torch.bool))
    assert abs(float(got[0] - empty[0])) > 1e-3  # the kept edge matters


def test_exact_subset_is_nan_elsewhere(model, pairs, exact):
    sub = edge_scores(model, pairs, method="exact", edges=[3, 10], batch_size=1)
    assert torch.allclose(sub.scores[[3, 10]], exact.scores[[3, 10]], atol=1e-6)
    assert int(sub.scores.isnan().sum()) == len(sub.graph) - 2
    frame = exact.to_frame()
    assert list(frame.columns) == ["sender", "receiver", "input", "edge", "score"] and len(frame) == len(exact.graph)


def test_eap_ig_inputs_approaches_exact_on_logit_edges(model, pairs, exact):
    g = edge_graph(model)
    first, k = g.receiver_spans()[-1]
    logits = slice(first, first + k)
    err = {m: float((edge_scores(model, pairs, method="eap-ig-inputs", steps=m).scores[logits]
                     - exact.scores[logits]).abs().sum()) for m in (2, 20)}
    assert err[20] < err[2], err


def test_eap_ig_activations_runs_and_correlates(model, pairs, exact):
    res = edge_scores(model, pairs, method="eap-ig-activations", steps=2)
    assert res.steps == 2 and res.n_prompts == pairs.n
    assert float(torch.corrcoef(torch.stack([res.scores, exact.scores]))[0, 1]) > 0.5


# ------------------------------------------------------------------------- a model made linear


def _linearised(tokens: torch.Tensor):
    """tiny Llama with every norm's scale frozen at its value on `tokens`, the MLPs the identity
    and the attention patterns frozen: the metric is then linear in every sender's output. (The
    bridge's norm modules call the HF modules, whose forwards are replaced; the output head
    calls the final one directly.)"""
    from interp.models.zoo import load_family

    model = load_family("llama")
    n = tokens.shape[0]
    norms = [m for m in model.bridge.modules() if "Normalization" in type(m).__name__]
    assert len(norms) == 2 * model.spec.n_layers + 1
    scales: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args: scales.__setitem__(
        id(mod), torch.rsqrt(args[0].pow(2).mean(-1, keepdim=True) + 1e-6))) for m in norms]
    _, cache = model.run_with_cache(tokens, [Site("pattern", layer=i) for i in range(model.spec.n_layers)])
    for h in handles:
        h.remove()

    def frozen(x, s, w):
        s = s if x.ndim == 3 else s[:, -1]  # the output head is given the last position only
        return x * s.repeat(x.shape[0] // n, *([1] * (s.ndim - 1))) * w

    for m in norms:
        w, s = m.original_component.weight, scales[id(m)]
        m.original_component.forward = lambda x, s=s, w=w, **_kw: frozen(x, s, w)
    for layer in model.hf_model.model.layers:
        layer.mlp.forward = lambda x, **_kw: x
    for i in range(model.spec.n_layers):
        pattern = cache[Site("pattern", layer=i)]
        model.add_hook(Site("pattern", layer=i), lambda t, _s, p=pattern: p.repeat(t.shape[0] // n, 1, 1, 1))
    return model


def test_eap_equals_exact_on_a_linear_model(tokenizer):
    pairs = tokenize_pairs(generate_ioi(3, tokenizer, seed=2, templates=[0]), tokenizer)
    model = _linearised(pairs.batches[0].clean)
    eap = edge_scores(model, pairs, method="eap")
    ex = edge_scores(model, pairs, method="exact")
    g = eap.graph
    into = [i for i, (_, r, k) in enumerate(g.edges) if r == "logits" or r.startswith("m") or k == "v"]
    qk = [i for i, (_, _, k) in enumerate(g.edges) if k in ("q", "k")]
    assert float(ex.scores[into].abs().max()) > 1e-3  # not trivially zero
    assert torch.allclose(eap.scores[into], ex.scores[into], atol=1e-5, rtol=1e-4), \
        float((eap.scores[into] - ex.scores[into]).abs().max())
    assert float(ex.scores[qk].abs().max()) < 1e-5 and float(eap.scores[qk].abs().max()) < 1e-5  # frozen patterns


# ------------------------------------------------------------------------- mean ablation


def test_mean_ablation_of_every_edge_is_the_mean_logits_input(model, pairs):
    """Every edge ablated to its mean: the logits read sum_s mean(a_s) + the output biases,
    whatever the prompt - computed here from the model's own cached sites."""
    g = edge_graph(model)
    L = model.spec.n_layers
    sites = [Site("resid_pre", layer=0)] + [Site(c, layer=i) for i in range(L) for c in ("attn_out", "mlp_out")]
    total, n = 0, 0
    for pb in pairs.batches:
        _, cache = model.run_with_cache(pb.clean, sites)
        total = total + sum(cache[s].float().mean(1).sum(0) for s in sites)  # bias included in attn_out
        n += len(pb)
    x = (total / n).expand(1, -1)
    pb = pairs.batches[0]
    logits = model.unembed(x)[0]
    want = float((logits[pb.answer_ids] - logits[pb.distractor_ids]).mean())
    got = evaluate_circuits(model, TokenizedPairs([pb], len(pb)), g, torch.zeros(1, len(g), dtype=torch.bool),
                            ablation="mean")
    assert float(got[0]) == pytest.approx(want, abs=1e-4)


def test_eap_ig_points_stacked_or_not(model, pairs):
    """EAP-IG's points one per forward (4 rows) or all stacked (5 points x 4 prompts) give the same
    scores; so does the gradient forward's per-head pull-back on a second call (by head slots,
    after the first call's per-head check)."""
    one = edge_scores(model, pairs, method="eap-ig-inputs", steps=5, grad_batch_size=4).scores
    stacked = edge_scores(model, pairs, method="eap-ig-inputs", steps=5, grad_batch_size=20).scores
    assert torch.allclose(one, stacked, rtol=1e-4, atol=1e-6 * float(one.abs().max()))
    again = edge_scores(model, pairs, method="eap-ig-inputs", steps=5, grad_batch_size=4).scores
    assert torch.allclose(one, again, rtol=1e-5, atol=1e-7 * float(one.abs().max()))


def test_head_slot_shortcut_is_used_only_when_checked(model, pairs, monkeypatch):
    """A slot shortcut that disagrees with one vector-Jacobian product per head is never used: the
    per-head products give the scores, call after call."""
    from interp.analyses import edges_grad

    right = edge_scores(model, pairs, method="eap").scores
    edges_grad._PER_HEAD.pop(model, None)
    real = edges_grad._LayerRec._own_slots
    monkeypatch.setattr(edges_grad._LayerRec, "_own_slots", lambda self, *a: real(self, *a) * 1.01)
    for _ in range(2):
        wrong_shortcut = edge_scores(model, pairs, method="eap").scores
        assert edges_grad._PER_HEAD[model] == set()
        assert torch.allclose(wrong_shortcut, right, rtol=1e-5, atol=1e-7 * float(right.abs().max()))


# ------------------------------------------------------------------------- bad input


def test_bad_input(model, pairs):
    g = edge_graph(model)
    with pytest.raises(InterpError, match="unknown edge attribution method 'atp'; allowed: eap, eap-ig-inputs"):
        edge_scores(model, pairs, method="atp")
    with pytest.raises(InterpError, match="steps must be >= 1"):
        edge_scores(model, pairs, method="eap-ig-inputs", steps=0)
    with pytest.raises(InterpError, match="empty"):
        edge_scores(model, TokenizedPairs([], 0), method="eap")
    pb = pairs.batches[0]
    two = PairBatch(pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids, pb.indices, pb.key)
    two.answer_ids = torch.stack([pb.answer_ids, pb.answer_ids], 1)  # two tokens per answer
    with pytest.raises(InterpError, match="single tokens"):
        edge_scores(model, TokenizedPairs([two], len(pb)), method="eap")
    with pytest.raises(InterpError, match="for method 'exact' only"):
        edge_scores(model, pairs, method="eap", edges=[0])
    with pytest.raises(InterpError, match="grad_batch_size must be an integer >= 1, got 0"):
        edge_scores(model, pairs, method="eap", grad_batch_size=0)
    with pytest.raises(InterpError, match="out of range"):
        edge_scores(model, pairs, method="exact", edges=[len(g)])
    with pytest.raises(InterpError, match="unknown ablation 'zero'; allowed: patching, mean"):
        evaluate_circuits(model, pairs, g, torch.ones(1, len(g), dtype=torch.bool), ablation="zero")
    with pytest.raises(InterpError, match="bool tensor"):
        evaluate_circuits(model, pairs, g, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(InterpError, match="not this model's edge graph"):
        evaluate_circuits(model, pairs, build_graph(2, 2), torch.ones(1, 46, dtype=torch.bool))


def test_unproven_backend_refuses():
    from interp.core.errors import UnsupportedError
    from interp.models.zoo import load_family

    with pytest.raises(UnsupportedError, match="backend 'nnsight': not proven exact"):
        edge_graph(load_family("llama", backend="nnsight"))
