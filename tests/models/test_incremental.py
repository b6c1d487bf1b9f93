"""`HookedModel.forward_incremental`: a key/value-cached forward in chunks gives the logits of
one full forward, hooks see (new queries, all keys), and `last_logits` keeps the last rows."""

from __future__ import annotations

import torch

from interp.core.sites import Site


def test_chunked_forward_equals_full_forward(tiny_model, assert_clean):
    torch.manual_seed(0)
    tokens = torch.randint(5, 200, (2, 37))
    shapes: list[tuple[int, ...]] = []
    with torch.no_grad():
        full = tiny_model.forward(tokens)
        cache, parts = None, []
        with tiny_model.hooks([(Site("pattern", 1), lambda t, _s: shapes.append(tuple(t.shape)))]):
            for start in range(0, 37, 16):
                logits, cache = tiny_model.forward_incremental(tokens[:, start : start + 16], cache)
                parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    H = tiny_model.spec.n_heads
    assert shapes == [(2, H, 16, 16), (2, H, 16, 32), (2, H, 5, 37)]
    assert_clean(tiny_model)


def test_last_logits_keeps_the_final_rows(tiny_model):
    tokens = torch.randint(5, 200, (1, 20))
    with torch.no_grad():
        full = tiny_model.forward(tokens)
        last, _ = tiny_model.forward_incremental(tokens, None, last_logits=3)
    assert last.shape[1] == 3
    torch.testing.assert_close(last, full[:, -3:], atol=1e-5, rtol=1e-5)
