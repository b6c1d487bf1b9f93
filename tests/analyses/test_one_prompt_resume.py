"""Regression: position-resolved sweeps on a one-prompt batch stack several variants; the
prefix keys/values must be copied per variant (broadcasting does not apply to them)."""

from __future__ import annotations

import torch

from interp.analyses.patching import sweep_sites
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models import load_model


def test_one_prompt_batch_resumed_at_positions():
    m = load_model("tiny-llama")
    pb = tokenize_pairs(generate_ioi(1, m.tokenizer, seed=0, templates=[0]), m.tokenizer).largest_batch()
    sites = [Site("resid_pre", layer=1, position=p) for p in range(3, 8)]
    sites += [Site("z", layer=2, head=h, position=5) for h in range(4)]
    fast = sweep_sites(m, pb, sites)
    _, src = m.run_with_cache(pb.clean, sorted({s.hook_site for s in sites}))
    for i, s in enumerate(sites):
        lg = m.run_with_hooks(pb.corrupt, [(s.hook_site, lambda t, _s, s=s: s.assign(t, src[s.hook_site]))])[:, -1]
        ref = lg[0, pb.answer_ids[0]] - lg[0, pb.distractor_ids[0]]
        assert torch.allclose(fast[i, 0], ref, atol=1e-5)
