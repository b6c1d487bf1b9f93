"""Retrieval heads read, per step and query head, the argmax key of the attention pattern while
the prompt is prefilled in key/value-cached chunks (`HookedModel.forward_incremental`). This
checks what interp's retrieval code collects (`retrieval._ArgmaxKeys` pattern hooks, the lowest
level that returns the argmaxes) over a 40-token prompt (> the sliding window) forwarded in
chunks of 16, then one token at a time (the decoding path), against the argmax of each layer's
pattern from one full raw forward with output_attentions=True. Exact ties (within 1e-6 in the
reference pattern) are accepted either way."""

from __future__ import annotations

import torch

from .support import refused_or

LONG = 40
SCHEDULE = [(0, 16), (16, 32)] + [(t, t + 1) for t in range(32, LONG)]


def test_retrieval_argmax_keys(family, model, raw, vocab):
    from interp.analyses.retrieval import _ArgmaxKeys

    tokens = torch.randint(1000, vocab, (1, LONG), generator=torch.Generator().manual_seed(11))
    from interp.core.sites import Site

    refused_or(model.validate_site, Site("pattern", layer=0))  # the retrieval scorers read patterns
    rec = _ArgmaxKeys(model)
    cache, steps = None, []
    with torch.no_grad():
        for start, end in SCHEDULE:
            with model.hooks(rec.hooks()):
                _, cache = refused_or(model.forward_incremental, tokens[:, start:end], cache, last_logits=1)
            steps.append(rec.stacked().cpu())
    ours = torch.cat(steps, -1)  # (layer, head, query)
    pats = raw.attention_patterns(tokens)  # (layer, head, query, key)
    ref = pats.argmax(-1)
    assert ours.shape == ref.shape, f"{family}: argmax keys shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    in_range = (ours >= 0) & (ours < LONG)
    ours_val = pats.gather(-1, ours.clamp(0, LONG - 1).unsqueeze(-1)).squeeze(-1)
    best = pats.max(-1).values
    wrong = (ours != ref) & (~in_range | (best - ours_val > 1e-6))
    if wrong.any():
        idx = torch.nonzero(wrong)
        layer, head, q = (int(v) for v in idx[0])
        where = sorted({(int(i[0]), int(i[1])) for i in idx})
        raise AssertionError(
            f"{family}: {int(wrong.sum())}/{wrong.numel()} argmax keys differ (layers/heads {where[:8]}); first at "
            f"layer {layer} head {head} query {q}: interp key {int(ours[layer, head, q])}, reference key "
            f"{int(ref[layer, head, q])} (pattern {float(ours_val[layer, head, q]):.4f} "
            f"vs {float(best[layer, head, q]):.4f})")
