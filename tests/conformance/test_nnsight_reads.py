"""nnsight backend reads against independent raw captures (matrix row "nnsight_reads").

For each zoo family the nnsight model (`load_family(family, backend="nnsight")`, cached here
per family) reads every site its family table offers (`sites_table`), at every layer, in one
trace; the same prompts run through the fresh raw HF model of `reference.py`, captured with
plain torch (pre-)hooks on modules found through the reference's own per-family table:

- embed: the input-embedding module's output (positions excluded, as TransformerLens'
  hook_embed), times Granite's `embedding_multiplier`; self-checked against layer 0's input
  where the family has no absolute position embedding;
- resid_pre / resid_post: a decoder layer's input / output; resid_final: the final norm's input;
- q / k: the query / key projection's output (before rotary and qk-norms, as TransformerLens'
  hook_q / hook_k), split into heads; v: the values as the attention function receives them;
- z: the attention output projection's input, split into (pos, head, d_head);
- attn_out / mlp_out: what the sublayer adds to the residual stream - the post-norm's output
  for Gemma 2/3 and OLMo 2, times `residual_multiplier` for Granite;
- resid_mid (sequential blocks): resid_pre + attn_out as just defined;
- pattern: the eager attention weights (`output_attentions=True`); logits: the model's.

Tolerance 1e-5 absolute + 1e-4 relative. A site the backend refuses (an `InterpError`) makes
the cell "refused" with the site and the reason, after the other sites were compared.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from .reference import FAMILIES as REF_PATHS
from .reference import RawModel, ReferenceSelfCheckError, isclose_report
from .support import refused_or

ATOL, RTOL = 1e-5, 1e-4
LAYERLESS = ("embed", "resid_final")
ABSOLUTE_POSITIONS = {"gpt2", "gpt_neo"}  # learned position embeddings added after the token embedding
EMBED_MULTIPLIER = {"granite": "embedding_multiplier"}  # config attribute scaling the token embedding

_NN: OrderedDict[str, object] = OrderedDict()  # family -> nnsight model, or the exception loading it
_KEEP = 2


def _nnsight(family: str):
    from interp.models.zoo import load_family

    if family in _NN:
        _NN.move_to_end(family)
        return _NN[family]
    while len(_NN) >= _KEEP:
        _NN.popitem(last=False)
    try:
        m = load_family(family, backend="nnsight")
    except Exception as e:  # re-raised inside refused_or by the test
        m = e
    _NN[family] = m
    return m


def _raise(e: BaseException):
    raise e


@pytest.fixture
def fresh_raw(family, vocab, request) -> RawModel:
    """conftest's raw reference model when its cache already holds this family (the whole
    conformance suite runs the other analyses first); else the same fresh HF model (same
    builder, seed and vocabulary) wrapped here, without the TransformerLens model that
    conftest's `raw` fixture loads alongside it (~5 s a family, unused here)."""
    from . import conftest

    if family in conftest._MODELS:
        return request.getfixturevalue("raw")
    from interp.models.zoo import build_family

    return RawModel(family, build_family(family, vocab_size=vocab, seed=0))


@torch.no_grad()
def _raw_captures(raw: RawModel, tokens: torch.Tensor, with_qkv: bool) -> tuple[torch.Tensor, dict]:
    """(logits, {component: {layer or None: tensor}}) from one hooked forward of the raw model."""
    store: dict[str, dict] = {k: {} for k in ("embed", "resid_pre", "resid_post", "resid_final", "q", "k", "v", "z",
                                              "attn_write", "mlp_write")}

    def rec(name):
        return lambda i, t: store[name].__setitem__(i, t.detach().float().clone())

    def qkv(i, q, k, v):
        store["v"][i] = v.detach().float().clone()
        return q, k, v

    handles = []
    emb = raw.hf.get_input_embeddings()
    handles.append(emb.register_forward_hook(lambda _m, _a, out: rec("embed")(None, out)))
    for i, layer in enumerate(raw.layers):
        handles.append(layer.register_forward_hook(
            lambda _m, _a, out, i=i: rec("resid_post")(i, out[0] if isinstance(out, tuple) else out)))
        if with_qkv:
            for name in ("q", "k"):
                handles.append(getattr(raw.core[i], f"{name}_proj").register_forward_hook(
                    lambda _m, _a, out, i=i, name=name: rec(name)(i, out)))
    try:
        with raw.hooked(z=rec("z"), resid_pre=rec("resid_pre"), attn_write=rec("attn_write"),
                        mlp_write=rec("mlp_write"), final_in=lambda x: rec("resid_final")(None, x),
                        qkv=qkv if with_qkv else None):
            out = raw.hf(input_ids=tokens, use_cache=False, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    if out.attentions is None or any(a is None for a in out.attentions):
        raise ReferenceSelfCheckError(f"{raw.family}: output_attentions=True returned no patterns")
    store["pattern"] = {i: a.float() for i, a in enumerate(out.attentions)}
    return out.logits.float(), store


def _references(raw: RawModel, tokens: torch.Tensor, with_qkv: bool) -> tuple[torch.Tensor, dict]:
    logits, c = _raw_captures(raw, tokens, with_qkv)
    cfg, paths = raw.hf.config, REF_PATHS[raw.family]
    rm = float(getattr(cfg, paths.residual_multiplier)) if paths.residual_multiplier else 1.0
    b, T = tokens.shape
    heads = lambda t: t.view(b, T, -1, raw.d_head)  # noqa: E731 - (b, T, n*d) -> (b, T, n, d)
    ref: dict[str, dict] = {
        "resid_pre": c["resid_pre"], "resid_post": c["resid_post"], "pattern": c["pattern"],
        "z": {i: heads(t) for i, t in c["z"].items()},
        "attn_out": {i: t * rm for i, t in c["attn_write"].items()},
        "mlp_out": {i: t * rm for i, t in c["mlp_write"].items()},
        "resid_final": {None: c["resid_final"][None]},
        "q": {i: heads(t) for i, t in c["q"].items()},
        "k": {i: heads(t) for i, t in c["k"].items()},
        "v": {i: t.transpose(1, 2) for i, t in c["v"].items()},  # (b, kv, T, d) -> (b, T, kv, d)
    }
    ref["resid_mid"] = {i: ref["resid_pre"][i] + ref["attn_out"][i] for i in range(raw.L)}
    embed = c["embed"][None] * (float(getattr(cfg, EMBED_MULTIPLIER[raw.family]))
                                if raw.family in EMBED_MULTIPLIER else 1.0)
    if raw.family not in ABSOLUTE_POSITIONS:
        msg = isclose_report(embed, ref["resid_pre"][0], atol=ATOL, rtol=RTOL)
        if msg is not None:
            raise ReferenceSelfCheckError(f"{raw.family}: scaled token embedding is not layer 0's input: {msg}")
    ref["embed"] = {None: embed}
    return logits, ref


def _read(model, tokens, sites):
    """nnsight (logits, cache) of the readable sites, and {site: refusal} for the others: one
    trace; on a refusal, one trace per component to find the refused ones."""
    from interp.core.errors import InterpError

    try:
        logits, cache = model.run_with_cache(tokens, sites)
        return logits, cache, {}
    except InterpError:
        pass
    by_comp: dict[str, list] = {}
    for s in sites:
        by_comp.setdefault(str(s.component), []).append(s)
    cache, refused, logits = {}, {}, None
    for group in by_comp.values():
        try:
            logits, part = model.run_with_cache(tokens, group)
            cache.update(part)
        except InterpError as e:
            refused[group[0]] = f"{type(e).__name__}: {e}"
    if logits is None:
        logits = model.forward(tokens)
    return logits, cache, refused


def test_nnsight_reads(family, fresh_raw, pb):
    from interp.core.sites import Site

    model = _nnsight(family)
    if isinstance(model, BaseException):
        refused_or(_raise, model)
    tokens = pb.clean
    comps = [str(c) for c in model.sites_table]
    L = model.spec.n_layers
    sites = [Site(c) if c in LAYERLESS else Site(c, layer=layer)
             for c in comps for layer in ([None] if c in LAYERLESS else range(L))]
    with torch.no_grad():
        logits, cache, refused = refused_or(_read, model, tokens, sites)
    ref_logits, ref = _references(fresh_raw, tokens, with_qkv=bool({"q", "k", "v"} & set(comps)))

    bad = []
    msg = isclose_report(logits, ref_logits, atol=ATOL, rtol=RTOL)
    if msg is not None:
        bad.append(f"logits: {msg}")
    for s in sites:
        if s not in cache:
            continue
        msg = isclose_report(cache[s], ref[str(s.component)][s.layer], atol=ATOL, rtol=RTOL)
        if msg is not None:
            bad.append(f"{s}: {msg}")
    assert not bad, f"{family}: {len(bad)} nnsight read(s) differ from the raw captures:\n" + "\n".join(bad)
    if refused:
        pytest.skip("refused: " + "; ".join(f"{s.component}: {why}" for s, why in refused.items()))
