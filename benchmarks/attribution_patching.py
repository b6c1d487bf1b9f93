"""Benchmark: attribution patching (AtP) cost in forward-pass equivalents, and its agreement
with exact activation patching of every head's output.

AtP estimates the patching effect of every head (and MLP) from one clean forward, one corrupt
forward and one backward. This script times it (with and without AtP*'s QK fix) against one
plain forward of the same batch (target: <= 4 forward equivalents), and compares the head map
with the exact sweep (`interp.analyses.patching.patch_heads`): Spearman correlation and top-k
overlap of the effects.

    python benchmarks/attribution_patching.py --model smollm2-135m --n-prompts 10
    python benchmarks/attribution_patching.py --model tiny-llama --n-prompts 4   # seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from interp.analyses.attribution import agreement, attribution_patching
from interp.analyses.patching import patch_heads
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models.loading import load_model

TARGET_FORWARDS = 4.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-prompts", type=int, default=10)
    p.add_argument("--template", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    ds = generate_ioi(args.n_prompts, model.tokenizer, seed=args.seed, templates=[args.template])
    pairs = tokenize_pairs(ds, model.tokenizer)
    pb = pairs.largest_batch()
    assert len(pb) == args.n_prompts

    with torch.no_grad():
        model.forward(pb.corrupt)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            model.forward(pb.corrupt)
            times.append(time.perf_counter() - t)
    fwd = statistics.median(times)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    # AtP: heads + MLPs from one clean forward, one corrupt forward and one backward (the
    # clean/corrupt metrics come from those same forwards).
    atp, t_atp = timed(lambda: attribution_patching(model, pairs, residual=False))
    atp_qk, t_qk = timed(lambda: attribution_patching(model, pairs, residual=False, qk_fix=True))
    exact, t_exact = timed(lambda: patch_heads(model, pairs))
    agree = agreement(atp.results["z"], exact, k=args.top_k)
    agree_qk = agreement(atp_qk.results["z"], exact, k=args.top_k)

    print(f"attribution patching: {args.model}, {args.n_prompts} prompts x {pb.clean.shape[1]} tokens, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':34}{'seconds':>9}{'forwards':>10}")
    print(f"{'one plain forward':34}{fwd:9.3f}{1.0:10.1f}")
    print(f"{'AtP (heads + MLPs)':34}{t_atp:9.3f}{t_atp / fwd:10.1f}")
    print(f"{'AtP + QK fix':34}{t_qk:9.3f}{t_qk / fwd:10.1f}")
    print(f"{'exact head sweep (interp)':34}{t_exact:9.3f}{t_exact / fwd:10.1f}")
    met = "met" if t_atp / fwd <= TARGET_FORWARDS else "not met"
    print(f"AtP cost: {t_atp / fwd:.1f} forward equivalents (target <= {TARGET_FORWARDS:.0f}: {met})")
    print(f"agreement with exact head patching: spearman {agree['spearman']:.3f}, "
          f"top-{args.top_k} overlap {agree[f'top{args.top_k}_overlap']:.2f} "
          f"(with QK fix: {agree_qk['spearman']:.3f}, {agree_qk[f'top{args.top_k}_overlap']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "n_prompts": args.n_prompts, "forward_s": fwd, "atp_s": t_atp,
            "atp_qk_s": t_qk, "exact_s": t_exact, "atp_forwards": t_atp / fwd,
            "agreement": agree, "agreement_qk": agree_qk,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
