"""Benchmark: the exact head-patching sweep, TransformerLens' own loop vs `interp`'s batched sweep.

Both compute the same (layer, head) map: denoising each head's output z over all positions,
scored by the mean logit difference (answer - distractor, last position) over an IOI batch of
equal-length prompts.

- baseline: `transformer_lens.patching.get_act_patch_attn_head_out_all_pos` on the model's
  TransformerBridge, one full forward per head (plus the clean cache run it needs);
- ours: `interp.analyses.patching.sweep_sites`, which resumes each forward at the patched
  layer, stacks a layer's heads along the batch axis and unembeds only two columns.

Both are timed end to end (their own clean/source run included) under `torch.no_grad`, and
expressed in forward-pass equivalents (time / one plain forward of the same batch). The script
exits 1 when the two maps differ by more than 1e-4 (correctness); the speed ratio is reported
against the 3x target but never fails the run.

    python benchmarks/head_sweep.py --model smollm2-135m --n-prompts 10
    python benchmarks/head_sweep.py --model tiny-llama --n-prompts 4      # seconds, for CI
    python benchmarks/head_sweep.py --n-prompts 10 --skip-tl --json out.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from interp.analyses.patching import sweep_sites
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models.loading import load_model

TOLERANCE = 1e-4
TARGET_RATIO = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a load_model name (default: smollm2-135m)")
    p.add_argument("--n-prompts", type=int, default=20, help="IOI prompts in the batch (default: 20)")
    p.add_argument("--template", type=int, default=0, help="IOI template index, so all prompts have one length")
    p.add_argument("--batch-size", type=int, default=64, help="patch variants per forward in our sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-tl", action="store_true", help="skip the slow TransformerLens baseline")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice); 1 is steadier on a busy machine")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the numbers here")
    return p.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn):
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, seed=args.seed)
    L, H = model.spec.n_layers, model.spec.n_heads
    ds = generate_ioi(args.n_prompts, model.tokenizer, seed=args.seed, templates=[args.template])
    pb = tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos).largest_batch()
    assert len(pb) == args.n_prompts, f"the largest equal-length batch holds {len(pb)} of {args.n_prompts} prompts"
    n, T = pb.clean.shape
    dev = model.device
    clean, corrupt = pb.clean.to(dev), pb.corrupt.to(dev)
    answer, distractor = pb.answer_ids.to(dev), pb.distractor_ids.to(dev)
    rows = torch.arange(n, device=dev)

    # One plain forward of the batch: warm up once, then the median of three.
    model.forward(corrupt)
    fwd_times = [timed(lambda: model.forward(corrupt))[1] for _ in range(3)]
    t_fwd = statistics.median(fwd_times)

    sites = [Site("z", layer=layer, head=h) for layer in range(L) for h in range(H)]
    ours, t_ours = timed(
        lambda: sweep_sites(model, pb, sites, direction="denoising", metric="logit_diff", batch_size=args.batch_size)
        .mean(1)
        .view(L, H)
    )

    tl_map, t_tl = None, None
    if not args.skip_tl:
        from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

        bridge = model.bridge  # the transformer_lens backend's TransformerBridge

        def metric(logits: torch.Tensor) -> torch.Tensor:
            last = logits[:, -1]
            return (last[rows, answer] - last[rows, distractor]).mean()

        def run_tl() -> torch.Tensor:
            _, clean_cache = bridge.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_z"))
            return get_act_patch_attn_head_out_all_pos(bridge, corrupt, clean_cache, metric)

        tl_map, t_tl = timed(run_tl)

    max_diff = float((tl_map.to(ours.device).float() - ours).abs().max()) if tl_map is not None else None
    ratio = t_tl / t_ours if t_tl is not None else None
    numbers = {
        "model": args.model,
        "n_prompts": n,
        "seq_len": T,
        "n_layers": L,
        "n_heads": H,
        "batch_size": args.batch_size,
        "forward_s": t_fwd,
        "ours_s": t_ours,
        "ours_forward_equivalents": t_ours / t_fwd,
        "tl_s": t_tl,
        "tl_forward_equivalents": t_tl / t_fwd if t_tl is not None else None,
        "ratio_tl_over_ours": ratio,
        "max_abs_diff": max_diff,
        "device": str(dev),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformer_lens": md.version("transformer-lens"),
        "python": platform.python_version(),
    }
    print_table(numbers)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")

    if max_diff is not None and max_diff > TOLERANCE:
        print(f"FAIL: the maps differ by {max_diff:.3g} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


def print_table(x: dict) -> None:
    print()
    print(f"head-patching sweep: {x['model']}, {x['n_layers']} layers x {x['n_heads']} heads = "
          f"{x['n_layers'] * x['n_heads']} sites, {x['n_prompts']} prompts x {x['seq_len']} tokens")
    print(f"device {x['device']} ({x['cpu']}, {x['cpu_count']} cores), torch threads {x['torch_threads']}, "
          f"torch {x['torch']}, transformer-lens {x['transformer_lens']}")
    print(f"{'':32}{'seconds':>10}{'forwards':>11}")
    print(f"{'one plain forward':32}{x['forward_s']:>10.3f}{1:>11.1f}")
    if x["tl_s"] is not None:
        print(f"{'TransformerLens (baseline)':32}{x['tl_s']:>10.2f}{x['tl_forward_equivalents']:>11.1f}")
    else:
        print(f"{'TransformerLens (baseline)':32}{'skipped':>10}")
    print(f"{'interp sweep_sites (ours)':32}{x['ours_s']:>10.2f}{x['ours_forward_equivalents']:>11.1f}")
    if x["ratio_tl_over_ours"] is not None:
        met = "met" if x["ratio_tl_over_ours"] >= TARGET_RATIO else "not met"
        print(f"speed ratio (TL / ours): {x['ratio_tl_over_ours']:.2f}x   target >= {TARGET_RATIO:g}x: {met}")
        ok = "ok" if x["max_abs_diff"] <= TOLERANCE else "TOO LARGE"
        print(f"max abs diff between the maps: {x['max_abs_diff']:.3g} (tolerance {TOLERANCE:g}: {ok})")
    else:
        print("speed ratio (TL / ours): n/a (--skip-tl)   target >= 3x: not measured")


if __name__ == "__main__":
    sys.exit(main())
