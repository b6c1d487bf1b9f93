"""Activation patching on the tiny models, checked against an independent raw-PyTorch loop.

The reference (tests/conftest.py `RawReference`) runs one full forward of a fresh raw HF model
per site, overwriting the site's slice with a torch hook on the HF module itself
(`o_proj`/`c_proj` input for a head's z, the decoder layer's input for resid_pre, the attention
/ MLP module's output for attn_out / mlp_out). `sweep_sites` shares the prefix, batches the
variants and unembeds two columns; the two must agree to 1e-4."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.patching import baseline_metrics, patch_heads, patch_residual, sweep_sites
from interp.analyses.results import PatchingResult
from interp.core.errors import InterpError
from interp.core.metrics import Metric, get_metric
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs

TOL = 1e-4
DIRECTIONS = ("denoising", "noising")


@pytest.fixture(scope="module")
def pairs(tokenizer):
    return tokenize_pairs(generate_ioi(4, tokenizer, seed=0, templates=[0]), tokenizer)


@pytest.fixture(scope="module")
def pb(pairs):
    b = pairs.largest_batch()
    assert len(b) >= 3
    return b


@pytest.fixture(scope="module")
def mixed_pairs(tokenizer):
    """Pairs of several token lengths (several templates)."""
    tp = tokenize_pairs(generate_ioi(6, tokenizer, seed=0), tokenizer)
    assert len(tp.by_length().batches) >= 3 and len({len(b) for b in tp.by_length().batches}) >= 2
    return tp


@pytest.fixture(scope="module")
def positions(pb):
    """The positions the per-position raw loops visit (all of them would cost ~10 s more):
    every position where clean and corrupt differ (the names), the first, a plain middle one,
    and the last (negative index too, as the sweeps accept it)."""
    T = pb.clean.shape[1]
    diff = [p for p in range(T) if not torch.equal(pb.clean[:, p], pb.corrupt[:, p])]
    assert diff
    middle = next(p for p in range(T) if p not in diff and 0 < p < T - 1)
    return sorted({0, middle, *diff}) + [T - 1, -1]


@pytest.fixture(scope="module")
def ref(raw_tiny, raw_reference):
    return raw_reference(raw_tiny)


def raw_sweep(ref, pb, sites, direction):
    """(site, prompt) logit differences, one full raw forward per site."""
    base, source = (pb.corrupt, pb.clean) if direction == "denoising" else (pb.clean, pb.corrupt)
    cache: dict = {}
    rows = [
        ref.patch_metric(
            base,
            source,
            pb.answer_ids,
            pb.distractor_ids,
            str(s.component),
            s.layer,
            s.head,
            s.position,
            cache,
        )
        for s in sites
    ]
    return torch.stack(rows)


def _check(got, expected):
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= TOL, f"max abs diff {err:.3g}"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_all_heads_equal_raw_loop(tiny_model, ref, pb, direction, assert_clean):
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    sites = [Site("z", layer, head=h) for layer in range(L) for h in range(H)]
    got = sweep_sites(tiny_model, pb, sites, direction=direction)
    expected = raw_sweep(ref, pb, sites, direction)
    _check(got, expected)
    # Not trivially equal: heads differ from each other and from the unpatched run.
    assert got.std(0).max() > 0
    assert_clean(tiny_model)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_heads_per_position_equal_raw_loop(tiny_model, ref, pb, positions, direction):
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    sites = [
        Site("z", layer, head=h, position=p)
        for layer in range(L)
        for h in range(H)
        for p in positions
    ]
    got = sweep_sites(tiny_model, pb, sites, direction=direction)
    _check(got, raw_sweep(ref, pb, sites, direction))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_residual_components_per_position_equal_raw_loop(tiny_model, ref, pb, positions, direction):
    L = tiny_model.spec.n_layers
    sites = [
        Site(c, layer, position=p)
        for c in ("resid_pre", "attn_out", "mlp_out")
        for layer in range(L)
        for p in positions
    ]
    got = sweep_sites(tiny_model, pb, sites, direction=direction)
    _check(got, raw_sweep(ref, pb, sites, direction))


def test_whole_tensor_and_negative_position_sites(tiny_model, ref, pb):
    sites = [
        Site("z", 1),
        Site("attn_out", 2),
        Site("mlp_out", 0),
        Site("resid_pre", 3),
        Site("z", 2, head=1, position=-1),
        Site("resid_pre", 1, position=-1),
    ]
    got = sweep_sites(tiny_model, pb, sites)
    _check(got, raw_sweep(ref, pb, sites, "denoising"))


def test_resid_post_equals_raw_loop(tiny_model, ref, pb):
    sites = [Site("resid_post", layer, position=p) for layer in range(4) for p in (1, -1)]
    sites.append(Site("resid_post", 2))
    _check(sweep_sites(tiny_model, pb, sites), raw_sweep(ref, pb, sites, "denoising"))


def test_qkv_heads_equal_raw_loop(tiny_models, raw_reference, tokenizer, pb):
    """Grouped-query attention: q has 4 heads, k and v 2; hook_q/k/v are the projections'
    outputs before RoPE."""
    from interp.models.tiny import build_tiny

    model = tiny_models["tiny-llama"]
    ref = raw_reference(build_tiny("tiny-llama", vocab_size=len(tokenizer), seed=0))
    sites = [Site("q", layer, head=h) for layer in (0, 2) for h in range(4)]
    sites += [
        Site(c, layer, head=h, position=p)
        for c in ("k", "v")
        for layer in (1, 3)
        for h in range(2)
        for p in (None, -1)
    ]
    for direction in DIRECTIONS:
        _check(
            sweep_sites(model, pb, sites, direction=direction), raw_sweep(ref, pb, sites, direction)
        )


def test_small_batch_size_and_site_order(tiny_model, pb):
    """Chunking the variants and shuffling the site list change nothing."""
    sites = [Site("z", layer, head=h) for layer in range(4) for h in range(4)]
    sites += [Site("mlp_out", layer, position=p) for layer in range(4) for p in (0, 5, -1)]
    full = sweep_sites(tiny_model, pb, sites)
    perm = torch.randperm(len(sites), generator=torch.Generator().manual_seed(0)).tolist()
    seen = []
    shuffled = sweep_sites(
        tiny_model,
        pb,
        [sites[i] for i in perm],
        batch_size=3,
        progress=lambda done, total: seen.append((done, total)),
    )
    torch.testing.assert_close(shuffled, full[perm], rtol=0, atol=TOL)
    assert seen[-1] == (len(sites), len(sites))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_prob_metric_and_metric_object(tiny_model, ref, pb):
    sites = [Site("z", 3, head=h) for h in range(4)] + [Site("resid_pre", 2, position=-1)]
    got = sweep_sites(tiny_model, pb, sites, metric=get_metric("prob_diff"))
    base, src = pb.corrupt, pb.clean
    r = torch.arange(len(pb))
    expected = []
    for s in sites:
        source = ref.capture(src, str(s.component), s.layer)
        p = ref.patched_last_logits(
            base, str(s.component), s.layer, s.head, s.position, source
        ).softmax(-1)
        expected.append(p[r, pb.answer_ids] - p[r, pb.distractor_ids])
    _check(got, torch.stack(expected))


def test_baseline_metrics_equal_raw(tiny_model, ref, pb):
    clean, corrupt = baseline_metrics(tiny_model, pb, get_metric("logit_diff"))
    a, d = pb.answer_ids, pb.distractor_ids
    _check(clean, ref.logit_diff(ref.last_logits(pb.clean), a, d))
    _check(corrupt, ref.logit_diff(ref.last_logits(pb.corrupt), a, d))
    assert (clean - corrupt).abs().min() > 1e-3  # the corruption changes the metric


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_whole_input_patch_restores_the_source(tiny_model, pb, direction):
    """Patching all of layer 0's resid_pre (every position) is running the source prompt:
    normalised 1 for denoising (clean), 0 for noising (corrupt)."""
    vals = sweep_sites(tiny_model, pb, [Site("resid_pre", 0)], direction=direction)[0]
    clean, corrupt = baseline_metrics(tiny_model, pb, get_metric("logit_diff"))
    source = clean if direction == "denoising" else corrupt
    torch.testing.assert_close(vals, source, rtol=0, atol=TOL)
    norm = (vals.mean() - corrupt.mean()) / (clean.mean() - corrupt.mean())
    assert abs(norm.item() - (1.0 if direction == "denoising" else 0.0)) <= 1e-4


def test_patching_an_unchanged_token_does_nothing(tiny_model, pb):
    """Where clean and corrupt share the token, their layer-0 residuals are equal: a no-op."""
    same = [p for p in range(pb.clean.shape[1]) if torch.equal(pb.clean[:, p], pb.corrupt[:, p])]
    assert same and len(same) < pb.clean.shape[1]
    vals = sweep_sites(tiny_model, pb, [Site("resid_pre", 0, position=p) for p in same])
    _, corrupt = baseline_metrics(tiny_model, pb, get_metric("logit_diff"))
    torch.testing.assert_close(vals, corrupt.expand_as(vals), rtol=0, atol=TOL)


def test_patch_heads_result(tiny_model, pairs, pb):
    res = patch_heads(tiny_model, pairs)
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    assert isinstance(res, PatchingResult)
    assert (
        res.analysis == "head_patching"
        and res.direction == "denoising"
        and res.metric == "logit_diff"
    )
    assert res.axes == ("layer", "head") and res.values.shape == (L, H)
    assert res.n_prompts == pairs.n == len(pb)
    per_prompt = sweep_sites(
        tiny_model, pb, [Site("z", layer, head=h) for layer in range(L) for h in range(H)]
    )
    torch.testing.assert_close(res.values, per_prompt.mean(1).view(L, H), rtol=0, atol=TOL)
    clean, corrupt = baseline_metrics(tiny_model, pb, get_metric("logit_diff"))
    assert res.clean_metric == pytest.approx(clean.mean().item(), abs=1e-5)
    assert res.corrupt_metric == pytest.approx(corrupt.mean().item(), abs=1e-5)
    expected_norm = (res.values - res.corrupt_metric) / (res.clean_metric - res.corrupt_metric)
    torch.testing.assert_close(res.normalised, expected_norm)

    df = res.to_frame()
    assert list(df.columns) == [
        "layer",
        "head",
        "metric_value",
        "normalised",
        "analysis",
        "direction",
        "metric",
    ]
    assert len(df) == L * H
    assert df[["layer", "head"]].drop_duplicates().shape[0] == L * H
    row = df[(df["layer"] == 2) & (df["head"] == 3)].iloc[0]
    assert row.metric_value == pytest.approx(res.values[2, 3].item())
    assert row.normalised == pytest.approx(expected_norm[2, 3].item())
    assert set(df.analysis) == {"head_patching"}

    top = res.top(3)
    assert len(top) == 3
    scores = top.normalised.abs().tolist()
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(
        df.normalised.abs().max()
    )


def test_patch_heads_noising_and_per_position(tiny_model, pairs, pb):
    L, H, T = tiny_model.spec.n_layers, tiny_model.spec.n_heads, pb.clean.shape[1]
    res = patch_heads(tiny_model, pairs, direction="noising", per_position=True, metric="prob")
    assert res.analysis == "head_patching_per_position" and res.direction == "noising"
    assert res.axes == ("layer", "head", "position") and res.values.shape == (L, H, T)
    assert res.token_labels == tiny_model.str_tokens(pb.clean[0])
    cells = [(0, 0, 0), (1, 2, T - 1), (3, 3, 4), (2, 1, T // 2)]
    sites = [Site("z", layer, head=h, position=p) for layer, h, p in cells]
    per_prompt = sweep_sites(tiny_model, pb, sites, direction="noising", metric="prob")
    torch.testing.assert_close(
        torch.stack([res.values[c] for c in cells]), per_prompt.mean(1), rtol=0, atol=TOL
    )
    df = res.to_frame()
    assert list(df.columns)[:6] == [
        "layer",
        "head",
        "position",
        "token",
        "metric_value",
        "normalised",
    ]
    assert len(df) == L * H * T
    assert df[df.position == 1].token.unique().tolist() == [res.token_labels[1]]
    # noising baseline: 1 means "unchanged clean behaviour"; top() ranks by distance from 1.
    top = res.top(1)
    assert (top.normalised - 1).abs().iloc[0] == pytest.approx((df.normalised - 1).abs().max())


def test_patch_residual_result(tiny_model, pairs, pb):
    L, T = tiny_model.spec.n_layers, pb.clean.shape[1]
    comps = ("resid_pre", "attn_out", "mlp_out")
    res = patch_residual(tiny_model, pairs)
    assert res.analysis == "residual_patching" and res.axes == ("component", "layer", "position")
    assert res.values.shape == (3, L, T) and res.labels == {"component": list(comps)}
    sites = [Site(c, layer, position=p) for c in comps for layer in range(L) for p in range(T)]
    torch.testing.assert_close(
        res.values, sweep_sites(tiny_model, pb, sites).mean(1).view(3, L, T), rtol=0, atol=TOL
    )
    df = res.to_frame()
    assert list(df.columns) == [
        "component",
        "layer",
        "position",
        "token",
        "metric_value",
        "normalised",
        "analysis",
        "direction",
        "metric",
    ]
    assert set(df.component) == set(comps) and len(df) == 3 * L * T
    v = df[
        (df.component == "mlp_out") & (df.layer == 1) & (df.position == T - 1)
    ].metric_value.item()
    assert v == pytest.approx(res.values[2, 1, T - 1].item())
    # resid_pre at layer 0, position where the names differ, carries real signal somewhere.
    assert res.normalised[0, 0].abs().max() > 0


def test_patch_residual_components_option(tiny_model, pairs):
    res = patch_residual(
        tiny_model, pairs, components=["resid_mid", "resid_post"], direction="noising"
    )
    assert res.values.shape[0] == 2 and res.labels["component"] == ["resid_mid", "resid_post"]


def test_mixed_lengths_average_over_all_prompts(tiny_model, mixed_pairs):
    """patch_heads sweeps each length batch and weights by prompt count."""
    L, H = tiny_model.spec.n_layers, tiny_model.spec.n_heads
    res = patch_heads(tiny_model, mixed_pairs)
    sites = [Site("z", layer, head=h) for layer in range(L) for h in range(H)]
    batches = mixed_pairs.by_length().batches
    total = sum(sweep_sites(tiny_model, b, sites).sum(1) for b in batches)
    torch.testing.assert_close(res.values, (total / mixed_pairs.n).view(L, H), rtol=0, atol=TOL)
    assert res.n_prompts == mixed_pairs.n == 6
    clean = sum(baseline_metrics(tiny_model, b, get_metric("logit_diff"))[0].sum() for b in batches)
    assert res.clean_metric == pytest.approx(clean.item() / 6, abs=1e-5)


def test_errors(tiny_model, pairs, pb):
    with pytest.raises(
        InterpError, match="unknown patching direction 'forward'; allowed: denoising, noising"
    ):
        sweep_sites(tiny_model, pb, [Site("z", 0)], direction="forward")
    with pytest.raises(InterpError, match="unknown patching direction"):
        patch_heads(tiny_model, pairs, direction="backward")
    with pytest.raises(InterpError, match="batch_size must be an integer >= 1"):
        sweep_sites(tiny_model, pb, [Site("z", 0)], batch_size=0)
    with pytest.raises(InterpError, match="site embed has no layer"):
        sweep_sites(tiny_model, pb, [Site("embed")])
    with pytest.raises(InterpError, match="unknown metric"):
        patch_heads(tiny_model, pairs, metric="accuracy")
    with pytest.raises(
        InterpError, match="unknown residual components \\['z'\\]; allowed: resid_pre"
    ):
        patch_residual(tiny_model, pairs, components=["z"])
    with pytest.raises(InterpError, match="unknown residual components"):
        patch_residual(tiny_model, pairs, components=[])


class Boom(RuntimeError):
    pass


def _failing_metric(after: int) -> Metric:
    calls = {"n": 0}
    inner = get_metric("logit_diff").fn

    def fn(record):
        calls["n"] += 1
        if calls["n"] > after:
            raise Boom("metric failed midway")
        return inner(record)

    return Metric("failing", fn, full_vocab=False, description="raises after a few calls")


@pytest.mark.parametrize("after", [0, 2])
def test_failing_metric_leaves_no_hooks(tiny_model, pb, assert_clean, after):
    before = tiny_model.forward(pb.clean)
    sites = [Site("z", layer, head=h) for layer in range(4) for h in range(4)]
    with pytest.raises(Boom):
        sweep_sites(tiny_model, pb, sites, metric=_failing_metric(after), batch_size=2)
    assert_clean(tiny_model)
    assert torch.equal(tiny_model.forward(pb.clean), before)


def test_failing_progress_leaves_no_hooks(tiny_model, pairs, assert_clean):
    def progress(done, total):
        if done >= 4:
            raise Boom("progress callback failed")

    with pytest.raises(Boom):
        patch_residual(tiny_model, pairs, progress=progress, batch_size=4)
    assert_clean(tiny_model)


@pytest.mark.parametrize("fn", [patch_heads, patch_residual])
def test_empty_dataset_is_one_clear_error(tiny_model, fn):
    from interp.core.errors import DatasetError
    from interp.data.pairs import TokenizedPairs

    with pytest.raises(DatasetError, match="patching needs at least one prompt pair; the dataset is empty$"):
        fn(tiny_model, TokenizedPairs([], 0))
