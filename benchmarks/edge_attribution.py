"""Benchmark: edge attribution cost in forward-pass equivalents (EAP, EAP-IG) and exact edge
patching's cost per edge.

Times `interp.analyses.edges.edge_scores` over the whole edge graph with method "eap" (one clean
and one corrupt forward and one backward: target <= 3.5 forward equivalents) and
"eap-ig-inputs" with m steps (target <= 3m + 3), in forward equivalents: each run of a method is
divided by a plain forward of the same batch timed just before it (the median of 3), and the
median ratio of --repeats runs is reported, so the machine's drift cancels. `--batch-size` and
`--grad-batch-size` (rows per exact / gradient forward) are the experiment's. Then exact edge
patching on a subset of edges (every edge into the logits, or the first --exact-edges of them): seconds and forward
equivalents per edge. Two reference lines say what any exact EAP costs here: the floor (the
corrupt forward, the clean forward and its backward to the input, nothing per edge) and the
edge contraction alone (sum over prompts and positions of diff_s . g_r for every edge). The
script also prints EAP's Spearman agreement with exact patching on the subset (it never fails
on speed).

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


def _in_forwards(model, tokens, fn, repeats: int):
    """(last output, median seconds, median of seconds / a plain forward timed just before)."""
    secs, ratios, out = [], [], None
    for _ in range(repeats):
        fwd = _forward_seconds(model, tokens)
        out, t = _timed(fn)
        secs.append(t)
        ratios.append(t / fwd)
    return out, statistics.median(secs), statistics.median(ratios)


def _floor(model, pb, metric: str) -> None:
    """The corrupt forward and the clean forward with the backward of the metric to the input
    embedding: what "one forward per run and one backward" costs, with nothing per edge."""
    from interp.analyses.edges_run import forward_to_final
    from interp.analyses.patching import pair_readout
    from interp.core.metrics import get_metric
    from interp.core.sites import Site

    with torch.no_grad():
        forward_to_final(model, pb.corrupt, [])
    rd = pair_readout(model, pb, get_metric(metric))
    kept = {}

    def leaf(t, _s):
        kept["x"] = t.detach().requires_grad_(True)
        return kept["x"]

    def final(t, _s):
        kept["final"] = t

    with torch.enable_grad():
        forward_to_final(model, pb.clean, [(Site("resid_pre", layer=0), leaf), (Site("resid_final"), final)])
        m = rd.score(model.unembed(kept["final"][:, -1], rd.columns), 1)
        torch.autograd.grad(m.sum(), kept["x"])


def _contraction(model, pb, graph, repeats: int) -> tuple[float, float]:
    """Seconds and forward equivalents of the contraction alone, on EAP's own gradients."""
    from interp.analyses.edges_grad import contract, receiver_grads
    from interp.analyses.edges_run import sender_outputs
    from interp.core.metrics import get_metric

    lay = graph.layout
    grads = receiver_grads(model, pb, lay, get_metric("logit_diff"), None, 1)
    diff = sender_outputs(model, pb.corrupt)[0] - sender_outputs(model, pb.clean)[0]
    _, t, f = _in_forwards(model, pb.clean, lambda: contract(grads, diff, lay), repeats)
    return t, f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-prompts", type=int, default=10)
    p.add_argument("--template", type=int, default=0)
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's m")
    p.add_argument("--exact-edges", type=int, default=200, help="edges into the logits to patch exactly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64, help="exact patching's rows, as in ioi_edges.yaml")
    p.add_argument("--grad-batch-size", type=int, default=20, help="EAP / EAP-IG rows, as in ioi_edges.yaml")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (the median is reported)")
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

    bs, gbs, r = args.batch_size, args.grad_batch_size, args.repeats
    edge_scores(model, pairs, method="eap", grad_batch_size=gbs)  # warm-up (and the one-time per-head checks)
    eap, t_eap, f_eap = _in_forwards(model, pb.clean, lambda: edge_scores(model, pairs, method="eap",
                                                                          grad_batch_size=gbs), r)
    _, t_ig, f_ig = _in_forwards(model, pb.clean, lambda: edge_scores(model, pairs, method="eap-ig-inputs",
                                                                      steps=args.steps, grad_batch_size=gbs), r)
    _, t_floor, f_floor = _in_forwards(model, pb.clean, lambda: _floor(model, pb, "logit_diff"), r)
    t_contract, f_contract = _contraction(model, pb, graph, r)
    subset = [i for i, (_, r_, _) in enumerate(graph.edges) if r_ == "logits"][:args.exact_edges]
    exact, t_exact = _timed(lambda: edge_scores(model, pairs, method="exact", edges=subset, batch_size=bs))
    per_edge = t_exact / len(subset)
    agree = edge_agreement(eap.scores, exact.scores, subset, k=min(10, len(subset)))

    target_ig = 3 * args.steps + 3
    print(f"edge attribution: {args.model}, {n} prompts x {pb.clean.shape[1]} tokens, {len(graph)} edges, "
          f"torch threads {torch.get_num_threads()}, rows per forward {gbs} (gradients) / {bs} (exact), "
          f"median of {r}")
    print(f"{'':44}{'seconds':>9}{'forwards':>10}")
    print(f"{'one plain forward':44}{fwd:9.3f}{1.0:10.1f}")
    print(f"{'EAP (all edges)':44}{t_eap:9.3f}{f_eap:10.1f}")
    print(f"{f'EAP-IG inputs, m = {args.steps} (all edges)':44}{t_ig:9.3f}{f_ig:10.1f}")
    print(f"{'floor: 2 forwards + 1 backward, no edges':44}{t_floor:9.3f}{f_floor:10.1f}")
    print(f"{'the edge contraction alone':44}{t_contract:9.3f}{f_contract:10.1f}")
    print(f"{f'exact patching ({len(subset)} edges)':44}{t_exact:9.3f}{t_exact / fwd:10.1f}")
    print(f"EAP cost: {f_eap:.1f} forward equivalents (target <= {TARGET_EAP}: "
          f"{'met' if f_eap <= TARGET_EAP else 'not met'}; floor + contraction here: {f_floor + f_contract:.1f})")
    print(f"EAP-IG cost: {f_ig:.1f} forward equivalents (target <= 3m + 3 = {target_ig}: "
          f"{'met' if f_ig <= target_ig else 'not met'})")
    print(f"exact edge patching: {per_edge * 1e3:.2f} ms = {per_edge / fwd:.2f} forward equivalents per edge")
    print(f"EAP vs exact on the {len(subset)} edges into the logits: spearman {agree['spearman']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "n_prompts": n, "n_edges": len(graph), "steps": args.steps, "forward_s": fwd,
            "batch_size": bs, "grad_batch_size": gbs, "repeats": r, "eap_s": t_eap, "eap_ig_s": t_ig,
            "exact_s": t_exact,
            "exact_edges": len(subset), "eap_forwards": f_eap, "eap_ig_forwards": f_ig, "floor_forwards": f_floor,
            "contraction_forwards": f_contract, "exact_forwards_per_edge": per_edge / fwd,
            "agreement": agree,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
