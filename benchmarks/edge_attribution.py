"""Benchmark: edge attribution cost in forward-pass equivalents (EAP, EAP-IG) and exact edge
patching's cost per edge.

Times `interp.analyses.edges.edge_scores` over the whole edge graph with method "eap" (one clean
and one corrupt forward and one backward: target <= 3.5 forward equivalents) and
"eap-ig-inputs" with m steps (target <= 3m + 3), each divided by one plain forward of the same
batch (median of 3 after a warm-up); then exact edge patching on a subset of edges (every edge
into the logits, or the first --exact-edges of them) and reports seconds and forward
equivalents per edge. The script also checks that EAP and exact patching agree in sign on the
subset's strongest edges (Spearman is printed; it never fails on speed).

    python benchmarks/edge_attribution.py --model smollm2-135m --n-prompts 10
    python benchmarks/edge_attribution.py --model tiny-llama --n-prompts 4   # seconds; the smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from interp.analyses.edge_circuits import edge_agreement
from interp.analyses.edges import edge_graph, edge_scores
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models.loading import load_model

TARGET_EAP = 3.5


def _forward_seconds(model, tokens) -> float:
    with torch.no_grad():
        model.forward(tokens)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            model.forward(tokens)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-prompts", type=int, default=10)
    p.add_argument("--template", type=int, default=0)
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's m")
    p.add_argument("--exact-edges", type=int, default=200, help="edges into the logits to patch exactly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    ds = generate_ioi(args.n_prompts, model.tokenizer, seed=args.seed, templates=[args.template])
    pairs = tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos)
    pb = pairs.largest_batch()
    n = len(pb)
    graph = edge_graph(model)
    fwd = _forward_seconds(model, pb.clean)

    bs = max(n, 1)
    eap, t_eap = _timed(lambda: edge_scores(model, pairs, method="eap", batch_size=bs))
    _, t_ig = _timed(lambda: edge_scores(model, pairs, method="eap-ig-inputs", steps=args.steps, batch_size=bs))
    subset = [i for i, (_, r, _) in enumerate(graph.edges) if r == "logits"][:args.exact_edges]
    exact, t_exact = _timed(lambda: edge_scores(model, pairs, method="exact", edges=subset, batch_size=bs))
    per_edge = t_exact / len(subset)
    agree = edge_agreement(eap.scores, exact.scores, subset, k=min(10, len(subset)))

    target_ig = 3 * args.steps + 3
    print(f"edge attribution: {args.model}, {n} prompts x {pb.clean.shape[1]} tokens, {len(graph)} edges, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':36}{'seconds':>9}{'forwards':>10}")
    print(f"{'one plain forward':36}{fwd:9.3f}{1.0:10.1f}")
    print(f"{'EAP (all edges)':36}{t_eap:9.3f}{t_eap / fwd:10.1f}")
    print(f"{f'EAP-IG inputs, m = {args.steps} (all edges)':36}{t_ig:9.3f}{t_ig / fwd:10.1f}")
    print(f"{f'exact patching ({len(subset)} edges)':36}{t_exact:9.3f}{t_exact / fwd:10.1f}")
    print(f"EAP cost: {t_eap / fwd:.1f} forward equivalents (target <= {TARGET_EAP}: "
          f"{'met' if t_eap / fwd <= TARGET_EAP else 'not met'})")
    print(f"EAP-IG cost: {t_ig / fwd:.1f} forward equivalents (target <= 3m + 3 = {target_ig}: "
          f"{'met' if t_ig / fwd <= target_ig else 'not met'})")
    print(f"exact edge patching: {per_edge * 1e3:.2f} ms = {per_edge / fwd:.2f} forward equivalents per edge")
    print(f"EAP vs exact on the {len(subset)} edges into the logits: spearman {agree['spearman']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "n_prompts": n, "n_edges": len(graph), "steps": args.steps, "forward_s": fwd,
            "eap_s": t_eap, "eap_ig_s": t_ig, "exact_s": t_exact, "exact_edges": len(subset),
            "eap_forwards": t_eap / fwd, "eap_ig_forwards": t_ig / fwd, "exact_forwards_per_edge": per_edge / fwd,
            "agreement": agree,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
