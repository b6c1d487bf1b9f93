"""Logits of the hooked model against the raw HF model: a full forward, and a key/value-cached
forward in chunks (`forward_incremental`) over a prompt longer than the sliding window."""

from __future__ import annotations

import torch

from .support import check, refused_or

LONG = 40  # tokens; chunks of 16 (the retrieval prefill path)


def test_logits(family, model, raw, pb):
    with torch.no_grad():
        ours = refused_or(model.forward, pb.clean)
    check(ours, raw.logits(pb.clean), f"{family} logits")


def test_incremental_logits(family, model, raw, vocab):
    tokens = torch.randint(1000, vocab, (1, LONG), generator=torch.Generator().manual_seed(7))
    parts, cache = [], None
    with torch.no_grad():
        for start in range(0, LONG, 16):
            logits, cache = refused_or(model.forward_incremental, tokens[:, start : start + 16], cache)
            parts.append(logits)
    check(torch.cat(parts, 1), raw.logits(tokens), f"{family} chunked forward_incremental logits (chunks of 16)")
