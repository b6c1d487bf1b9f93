"""Benchmark: one head-patching sweep run in this process vs on Ray actors (1 and 2 workers).

The same sweep (`interp.analyses.patching.patch_heads`: each head's output z denoised at all
positions, mean logit difference over one IOI batch of equal-length prompts) runs

- locally, unsharded (today's in-process path: the reference);
- locally as shards (`LocalExecutor`: one shard per layer plus the baseline);
- on a local Ray instance with 1 and with 2 workers (`RayExecutor`: each actor loads the model
  once; worker start-up is timed separately from the sweep).

It prints the seconds of each, the ratios local / Ray and the largest difference between each
map and the local one; it exits 1 when a map differs by more than 1e-6 (the sharded sweeps run
the same chunks, so on one machine they are equal). The speed-up needs free cores: on a 2-core
machine shared with other jobs, 2 workers rarely beat 1.

    python benchmarks/scaling.py --model tiny-llama --n-prompts 4          # seconds, for CI
    python benchmarks/scaling.py --model smollm2-135m --n-prompts 16 --json out.json
    python benchmarks/scaling.py --gpu      # workers on GPUs (device cuda, 1 GPU per worker)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from interp.analyses.patching import patch_heads
from interp.core.execution import LocalExecutor
from interp.data.ioi import generate_ioi
from interp.data.pairs import TokenizedPairs, tokenize_pairs
from interp.io.execution import RayExecutor
from interp.io.schema import ExecutionConfig
from interp.models.loading import load_model

TOLERANCE = 1e-6
def gpu_section(_args: argparse.Namespace) -> None:
    """--gpu: after the Ray timings, the GPU section of the scaling benchmark: the head sweep and
    AtP against TransformerLens on the bundled models and a random ~1B Llama placed with
    device_map=auto across the visible GPUs (`benchmarks/gpu_scaling.py`, which prints its figures)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_scaling", Path(__file__).with_name("gpu_scaling.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.main([])


GPU_SECTION: Callable[[argparse.Namespace], None] | None = gpu_section


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a load_model name (default: smollm2-135m)")
    p.add_argument("--n-prompts", type=int, default=8, help="IOI prompts in the batch (default: 8)")
    p.add_argument("--template", type=int, default=0, help="IOI template index, so all prompts have one length")
    p.add_argument("--batch-size", type=int, default=64, help="patch variants per forward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the driver and of each worker")
    p.add_argument("--gpu", action="store_true", help="device cuda; each Ray worker gets one GPU")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the numbers here")
    return p.parse_args(argv)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def on_ray(args: argparse.Namespace, model: Any, pairs: TokenizedPairs, workers: int) -> dict[str, Any]:
    """Start `workers` actors (timed), run the sweep on them (timed), stop them."""
    execution = ExecutionConfig(backend="ray", workers=workers, cpus_per_worker=args.threads,
                                gpus_per_worker=1 if args.gpu else 0)
    ex, t_start = timed(lambda: RayExecutor(execution, model, name=args.model, device=str(model.device),
                                            dtype="float32", seed=args.seed, log=lambda _: None))
    try:
        res, t_sweep = timed(lambda: patch_heads(model, pairs, batch_size=args.batch_size, executor=ex))
    finally:
        ex.close()
    return {"start_s": t_start, "sweep_s": t_sweep, "values": res.values}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import ray

    device = "cuda" if args.gpu else "cpu"
    model = load_model(args.model, device=device, seed=args.seed)
    ds = generate_ioi(args.n_prompts, model.tokenizer, seed=args.seed, templates=[args.template])
    pairs = tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos)
    assert len(pairs.batches) == 1, "the prompts must have one token length (one template)"

    local, t_local = timed(lambda: patch_heads(model, pairs, batch_size=args.batch_size))
    sharded, t_sharded = timed(lambda: patch_heads(model, pairs, batch_size=args.batch_size,
                                                   executor=LocalExecutor(model)))
    gpus = torch.cuda.device_count() if args.gpu else None
    ray.init(num_cpus=2 * args.threads, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        runs = {w: on_ray(args, model, pairs, w) for w in (1, 2) if not args.gpu or w <= (gpus or 0)}
    finally:
        ray.shutdown()

    def diff(values: torch.Tensor) -> float:
        return float((values - local.values).abs().max())

    numbers = {
        "model": args.model, "n_prompts": len(ds), "n_layers": model.spec.n_layers, "n_heads": model.spec.n_heads,
        "device": device, "threads": args.threads, "cpu_count": os.cpu_count(),
        "local_s": t_local, "local_sharded_s": t_sharded, "local_sharded_max_abs_diff": diff(sharded.values),
        "ray": {w: {"start_s": r["start_s"], "sweep_s": r["sweep_s"], "ratio_local_over_ray": t_local / r["sweep_s"],
                    "max_abs_diff": diff(r["values"])} for w, r in runs.items()},
    }
    print_table(numbers)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    if args.gpu and GPU_SECTION is not None:
        GPU_SECTION(args)
    worst = max([numbers["local_sharded_max_abs_diff"], *(r["max_abs_diff"] for r in numbers["ray"].values())])
    if worst > TOLERANCE:
        print(f"FAIL: a map differs from the local one by {worst:.3g} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


def print_table(x: dict) -> None:
    print()
    print(f"head-patching sweep: {x['model']}, {x['n_layers']} layers x {x['n_heads']} heads, {x['n_prompts']} "
          f"prompts; device {x['device']}, {x['threads']} torch thread(s) per process, {x['cpu_count']} cores")
    print(f"{'':28}{'start s':>9}{'sweep s':>9}{'local/this':>12}{'max abs diff':>14}")
    print(f"{'local (unsharded)':28}{'':>9}{x['local_s']:>9.2f}{1:>12.2f}{0:>14.3g}")
    print(f"{'local, sharded':28}{'':>9}{x['local_sharded_s']:>9.2f}{x['local_s'] / x['local_sharded_s']:>12.2f}"
          f"{x['local_sharded_max_abs_diff']:>14.3g}")
    for w, r in x["ray"].items():
        print(f"{f'ray, {w} worker(s)':28}{r['start_s']:>9.2f}{r['sweep_s']:>9.2f}{r['ratio_local_over_ray']:>12.2f}"
              f"{r['max_abs_diff']:>14.3g}")
    ratios = ", ".join(f"{w} worker(s) {r['ratio_local_over_ray']:.2f}x" for w, r in x["ray"].items())
    print(f"speed ratio (local / ray sweep): {ratios}")
    print(f"max abs diff vs local: {max([0.0, *(r['max_abs_diff'] for r in x['ray'].values())]):.3g} "
          f"(tolerance {TOLERANCE:g})")


if __name__ == "__main__":
    sys.exit(main())
