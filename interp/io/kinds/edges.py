"""Experiment kind "edge_circuit": edge attribution (EAP, EAP-IG) over the whole edge graph,
faithfulness curves scored as MIB does (CPR, CMD) next to a random-circuit baseline, exact edge
patching on a subset for the agreement (Spearman, top-k overlap), the selected circuit as a
table, a graph and an MIB submission file, and (IOI) which path-patching circuit heads it holds.

    kind: edge_circuit
    task: ioi                 # or colored_objects, mcq
    edges: {methods: [eap, eap-ig-inputs], steps: 5}
    faithfulness: {fractions: [0.001, ..., 1.0], selection: topn, absolute: [false, true]}
    exact: {n_prompts: 10, top_heads: 10}
    reference_run: discover   # ioi: the path-patching circuit to compare with

Edge scores, the circuit evaluator and the graph are `interp.analyses.edges`'; selection, the
curves and their areas `interp.analyses.edge_circuits`'; the MIB file `interp.io.mib`'s.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import torch

from interp.analyses.circuit import discover_circuit
from interp.analyses.edge_circuits import (
    FaithfulnessCurve,
    circuit_frame,
    circuit_heads,
    edge_agreement,
    faithfulness_curves,
    head_tables,
    random_scores,
    select_topn,
)
from interp.analyses.edges import edge_graph, edge_scores
from interp.data.colored_objects import generate_colored_objects
from interp.data.ioi import generate_ioi
from interp.data.mcq import generate_mcq
from interp.data.pairs import PairDataset, tokenize_pairs
from interp.io.kinds.circuits import _load_reference
from interp.io.kinds.edges_config import EdgeCircuitExperimentConfig
from interp.io.mib import mib_folder, mib_json
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.schema import resolve_chat
from interp.io.step import StepContext, StepResult, flat_frame
from interp.viz.edges import edge_circuit_graph, faithfulness_figure

__all__ = ["EdgeCircuitExperimentConfig"]


def _dataset(cfg: EdgeCircuitExperimentConfig, model) -> PairDataset:
    d = cfg.data
    if cfg.task == "ioi":
        return generate_ioi(d.n_prompts, model.tokenizer, seed=cfg.seed, corruption=d.corruption,
                            templates=list(d.templates) if d.templates is not None else None)
    if cfg.task == "colored_objects":
        return generate_colored_objects(d.n_prompts, model.tokenizer, seed=cfg.seed)
    return generate_mcq(d.n_prompts, model.tokenizer, seed=cfg.seed, chat=resolve_chat(d.chat, model))


def _tokenize(cfg: EdgeCircuitExperimentConfig, ds: PairDataset, model):
    # MCQ prompts are built as the mcq_letters kind builds them (a chat template brings its own <bos>)
    return tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos and cfg.task != "mcq")


def prepare(cfg: EdgeCircuitExperimentConfig, model, log):
    ds = _dataset(cfg, model)
    graph = edge_graph(model)  # refuses families whose edges are not exact, before the run exists
    log(f"data: {len(ds)} {cfg.task} prompt pairs; graph: {len(graph)} edges")
    reference = None
    if cfg.reference_run not in (None, "discover"):
        reference = _load_reference(cfg)
        log(f"reference circuit: {reference[0]}")
    return ds, _tokenize(cfg, ds, model), graph, reference


def _exact_subset(ds: PairDataset, n: int) -> PairDataset:
    return PairDataset(ds.pairs[:n], ds.name, {**ds.source, "subset": f"first {n}"})


def estimate(cfg: EdgeCircuitExperimentConfig, model, data) -> dict[str, int]:
    """Forward-pass equivalents: EAP ~3 per prompt, EAP-IG (m + 2), each evaluated circuit ~2, and
    one per prompt and subset edge for exact patching (the subset size from the graph: edges into
    the logits and into `top_heads` heads' q/k/v; without a model, one edge per head)."""
    n = data[1].n if data is not None else cfg.data.n_prompts
    graph = data[2] if data is not None else None
    costs: Counter[str] = Counter()
    for m in cfg.edges.methods:
        costs["data.n_prompts"] += n * (3 if m == "eap" else cfg.edges.steps + 2)
    curves = len(cfg.edges.methods) * len(cfg.faithfulness.absolute) + cfg.faithfulness.random_baseline
    costs["faithfulness.fractions"] += n * 2 * (curves * len(cfg.faithfulness.fractions) + 2)
    if cfg.exact.enabled:
        into_logits = sum(r == "logits" for _, r, _ in graph.edges) if graph is not None else 1
        per_head = 3 * into_logits
        costs["exact.n_prompts"] += cfg.exact.n_prompts * (into_logits + cfg.exact.top_heads * per_head)
    return dict(costs)


def dataset_step(ctx: StepContext) -> StepResult:
    return StepResult(tables={"dataset": flat_frame(ctx.data[0].to_frame())})


def _scores(ctx: StepContext, pairs, label: str) -> dict[str, torch.Tensor]:
    e, out = ctx.cfg.edges, {}
    for method in e.methods:
        res = edge_scores(ctx.model, pairs, method=method, steps=e.steps, metric=e.metric,
                          batch_size=e.batch_size, grad_batch_size=e.grad_batch_size,
                          progress=ctx.progress(f"{method} {label}"))
        out[method] = res.scores.detach().float().cpu()
    return out


def scores_step(ctx: StepContext) -> StepResult:
    graph = ctx.data[2]
    scores = ctx.state["scores"] = _scores(ctx, ctx.data[1], "scores")
    frames = [circuit_frame(graph, s, torch.zeros(len(graph), dtype=torch.bool)).drop(columns="in_circuit")
              .assign(method=m) for m, s in scores.items()]
    return StepResult("edge_scores", tables={"edge_scores": pd.concat(frames, ignore_index=True)},
                      summary=[f"edge scores: {', '.join(scores)} over {len(graph)} edges, {ctx.data[1].n} prompts"])


def _curve_text(c: FaithfulnessCurve) -> str:
    sel = "|score|" if c.absolute else "signed score"
    return f"{c.method} ({c.selection} by {sel}): CPR {c.cpr:.3f}, CMD {c.cmd:.3f}"


def faithfulness_step(ctx: StepContext) -> StepResult:
    cfg, (_, pairs, graph, _) = ctx.cfg, ctx.data
    f = cfg.faithfulness
    methods = dict(ctx.state["scores"])
    absolute = {m: f.absolute for m in methods}
    if f.random_baseline:  # random scores rank randomly by either key: one selection is enough
        methods["random"] = random_scores(len(graph), seed=cfg.seed)
        absolute["random"] = f.absolute[:1]
    curves = faithfulness_curves(ctx.model, pairs, graph, methods, absolute=absolute, fractions=f.fractions,
                                 selection=f.selection, ablation=f.ablation, metric=cfg.edges.metric,
                                 batch_size=cfg.edges.batch_size, progress=ctx.progress("evaluating circuits"))
    table = pd.concat([c.to_frame() for c in curves], ignore_index=True)
    summary = pd.DataFrame([c.summary() for c in curves])
    fig = faithfulness_figure(table, title=f"{cfg.task}: faithfulness by circuit size ({f.ablation})")
    text = ("f = (m(C) - m(empty)) / (m(full) - m(empty)) at each share of edges; CPR = area under f, CMD = area "
            "between f and 1, both over the linear edge fraction as MIB computes them. MIB reports CPR from the "
            "signed selection and CMD from the |score| one. " + "; ".join(_curve_text(c) for c in curves) + ".")
    return StepResult("faithfulness", tables={"faithfulness": table, "faithfulness_summary": summary},
                      figures={"faithfulness": fig}, summary=[_curve_text(c) for c in curves],
                      sections=[ReportSection("Faithfulness curves (MIB's CPR and CMD)", text=text, figure=fig,
                                              table=summary)])


def _top_heads(graph, scores: torch.Tensor, k: int) -> list[str]:
    """The k heads with the largest summed |score| over their outgoing edges."""
    total: Counter[str] = Counter()
    for (s, _, _), v in zip(graph.edges, scores.abs().tolist(), strict=True):
        if s.startswith("a"):
            total[s] += v
    return [h for h, _ in total.most_common(k)]


def subset_edges(graph, heads: list[str]) -> list[int]:
    """Every edge into the logits and into the q/k/v input of `heads`."""
    chosen = set(heads)
    return [i for i, (_, r, _) in enumerate(graph.edges) if r == "logits" or r in chosen]


def exact_step(ctx: StepContext) -> StepResult | None:
    cfg, (ds, _, graph, _) = ctx.cfg, ctx.data
    if not cfg.exact.enabled:
        return None
    heads = _top_heads(graph, ctx.state["scores"][cfg.circuit.method], cfg.exact.top_heads)
    subset = subset_edges(graph, heads)
    pairs = _tokenize(cfg, _exact_subset(ds, cfg.exact.n_prompts), ctx.model)
    exact = edge_scores(ctx.model, pairs, method="exact", metric=cfg.edges.metric, edges=subset,
                        batch_size=cfg.edges.batch_size, progress=ctx.progress("exact edge patching")).scores
    exact = exact.detach().float().cpu()
    # EAP / EAP-IG on the same prompts as exact (the run's own scores when those are all of them)
    same = pairs.n == ctx.data[1].n
    estimates = ctx.state["scores"] if same else _scores(ctx, pairs, f"on the {pairs.n} exact prompts")
    rows = [{"method": m, **edge_agreement(s, exact, subset, k=cfg.exact.top_k)} for m, s in estimates.items()]
    agree = pd.DataFrame(rows)
    idx = torch.tensor(subset)
    table = pd.DataFrame({"edge": [graph.edge_name(i) for i in subset], "exact": exact[idx].numpy(),
                          **{m: s[idx].numpy() for m, s in estimates.items()}})
    k = cfg.exact.top_k
    lines = [f"{r['method']} vs exact on {len(subset)} edges ({pairs.n} prompts): Spearman {r['spearman']:.3f}, "
             f"top-{k} overlap {r[f'top{k}_overlap']:.0%}" for r in rows]
    return StepResult("exact_agreement", tables={"exact_scores": table, "exact_agreement": agree}, summary=lines,
                      sections=[ReportSection("Agreement with exact edge patching", text=(
                          f"Exact edge patching on every edge into the logits and into the q/k/v of {len(heads)} "
                          f"heads ({', '.join(heads)}): {len(subset)} edges, the first {pairs.n} prompts; EAP and "
                          "EAP-IG on the same prompts. " + "; ".join(lines) + "."), table=agree)])


def _reference_classes(ctx: StepContext) -> tuple[str, dict[tuple[int, int], str]] | None:
    cfg, (ds, pairs, _, reference) = ctx.cfg, ctx.data
    if cfg.reference_run == "discover":
        bars: dict[str, object] = {}

        def progress(stage, done, total):
            if stage not in bars:
                bars[stage] = ctx.progress(f"path patching {stage}")
            bars[stage](done, total)  # type: ignore[operator]

        res = discover_circuit(ctx.model, pairs, ds, metric=cfg.edges.metric, batch_size=cfg.edges.batch_size,
                               pattern_seed=cfg.seed, progress=progress,
                               executors=lambda name: ctx.executor(f"reference_{name}"))
        reference = ("this run (path patching)", res.nodes, None)
    if reference is None:
        return None
    nodes = reference[1]
    return reference[0], {(int(a), int(b)): str(c) for a, b, c in zip(nodes["layer"], nodes["head"], nodes["class"],
                                                                      strict=True)}


def _class_table(classes: dict[tuple[int, int], str], heads: set[tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for cls in dict.fromkeys(classes.values()):
        members = sorted(h for h, c in classes.items() if c == cls)
        inside = [h for h in members if h in heads]
        rows.append({"class": cls, "heads": ", ".join(f"L{a}H{b}" for a, b in members),
                     "n_heads": len(members), "in_edge_circuit": ", ".join(f"L{a}H{b}" for a, b in inside),
                     "n_in_edge_circuit": len(inside)})
    return pd.DataFrame(rows)


def circuit_step(ctx: StepContext) -> StepResult:
    cfg, (_, _, graph, _) = ctx.cfg, ctx.data
    c = cfg.circuit
    scores = ctx.state["scores"][c.method]
    keep = select_topn(graph, scores, int(c.fraction * len(graph)), absolute=c.absolute)
    frame = circuit_frame(graph, scores, keep)
    ref = _reference_classes(ctx)
    classes = ref[1] if ref else {}
    nodes, edges = head_tables(frame, classes)
    title = f"{c.method} circuit: {int(keep.sum())} edges ({c.fraction:.1%} asked, pruned)"
    fig = edge_circuit_graph(frame, classes=classes, title=title, n_layers=graph.n_layers, n_heads=graph.n_heads)
    r = StepResult("edge_circuit", tables={"edge_circuit": frame, "circuit_nodes": nodes, "circuit_edges": edges},
                   figures={"edge_circuit": fig})
    kept = frame[frame["in_circuit"]]
    strongest = ", ".join(f"{e.edge} ({e.score:+.3f})" for e in kept.head(5).itertuples()) or "none"
    r.summary.append(f"{title}; {len(nodes)} heads; strongest edges: {strongest}")
    r.sections.append(ReportSection(f"The {c.method} edge circuit", text=(
        f"Top-n by {'|score|' if c.absolute else 'signed score'} at {c.fraction:.1%} of {len(graph)} edges, pruned "
        "to the edges on a path from the input to the logits. The graph shows heads and their head-to-head and "
        "head-to-logits edges (MLP and embedding edges are in the table)."), figure=fig, table=kept.head(30)))
    if ref:
        table = _class_table(classes, circuit_heads(graph, keep))
        r.tables["ioi_class_overlap"] = table
        r.summary.append(f"IOI circuit classes ({ref[0]}) in the {c.method} circuit: " + "; ".join(
            f"{t['class']} {t['n_in_edge_circuit']}/{t['n_heads']}" for t in table.to_dict("records")))
        r.sections.append(ReportSection("Path-patching IOI circuit heads in the edge circuit", table=table))
    if cfg.mib_export:
        name = f"mib-{mib_folder(cfg.task, cfg.model.name.split('/')[-1])}-importances.json"
        r.texts[name] = mib_json(graph, scores, keep, d_model=ctx.model.spec.d_model)
        r.summary.append(f"MIB submission file: {name} (place it as <folder>/importances.json, folder "
                         f"{mib_folder(cfg.task, cfg.model.name.split('/')[-1])})")
    return r


register_kind("edge_circuit", EdgeCircuitExperimentConfig, dataset_step, scores_step, faithfulness_step, exact_step,
              circuit_step, prepare=prepare, estimate=estimate)
