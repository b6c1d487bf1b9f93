"""Experiment kind "circuit": discover a circuit by path patching on IOI or Colored Objects,
compare it with a reference (IOI) circuit, and on Colored Objects run Merullo et al.'s
attention intervention on the inhibition heads the IOI circuit predicts.

    kind: circuit
    task: ioi               # or colored_objects
    reference_run: latest   # colored_objects: the newest complete IOI circuit run in runs_dir
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    StrictBool,
    StrictStr,
    field_validator,
)

from interp.analyses.circuit import CircuitResult, circuit_overlap, discover_circuit
from interp.analyses.colored_objects import intervention_experiment, option_accuracy
from interp.core.errors import ConfigError
from interp.data.colored_objects import generate_colored_objects
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.io import schema
from interp.io.kinds.patching import check_template_index
from interp.io.limits import PROMPT_BYTES, ModelShape, pairs_peak, variants
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.runstore import RunStore
from interp.io.schema import BaseExperimentConfig, Section
from interp.io.step import StepContext, StepResult, flat_frame
from interp.viz.circuits import circuit_graph
from interp.viz.heatmaps import head_heatmap


class CircuitDataConfig(Section):
    n_prompts: PositiveInt = Field(8, description="an integer >= 1")
    corruption: Literal["abc", "flip"] = "abc"
    templates: tuple[NonNegativeInt, ...] | None = Field(
        (0, 2), description="ioi only: null (all) or a list of template indices")

    @field_validator("templates")
    @classmethod
    def _templates(cls, templates: tuple[int, ...] | None) -> tuple[int, ...] | None:
        for t in templates or ():
            check_template_index(t)
        return templates


class CircuitParams(Section):
    k_movers: PositiveInt = 4
    k_negative: NonNegativeInt = 2
    k_inhibition: NonNegativeInt = 4
    k_upstream: NonNegativeInt = 4
    k_previous: NonNegativeInt = 3
    threshold: NonNegativeFloat = Field(0.02, description="a number >= 0 (normalised path effect)")
    freeze_mlps: StrictBool = False
    metric: Literal["logit_diff", "prob", "prob_diff"] = "logit_diff"
    batch_size: schema.BatchSizeSetting = Field(
        64, description="an integer >= 1 or 'auto' (max patch variants per forward)")


class InterventionConfig(Section):
    enabled: StrictBool = True
    n_random: NonNegativeInt = Field(3, description="random-head controls (seeds)")


class CircuitExperimentConfig(BaseExperimentConfig):
    kind: Literal["circuit"] = "circuit"
    task: Literal["ioi", "colored_objects"] = "ioi"
    data: CircuitDataConfig = CircuitDataConfig()
    circuit: CircuitParams = CircuitParams()
    reference_run: StrictStr | None = Field(
        None, description="null, 'latest' (newest complete IOI circuit run in runs_dir), "
        "'discover' (find the IOI circuit in this run too) or a run id/path")
    intervention: InterventionConfig = InterventionConfig()


def _dataset(cfg: CircuitExperimentConfig, model, task: str | None = None, progress=None):
    task = task or cfg.task
    d = cfg.data
    if task == "ioi":
        ds = generate_ioi(d.n_prompts, model.tokenizer, seed=cfg.seed, corruption=d.corruption,
                          templates=list(d.templates) if d.templates is not None else None, progress=progress)
    else:
        ds = generate_colored_objects(d.n_prompts, model.tokenizer, seed=cfg.seed, progress=progress)
    return ds, tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos)  # Gemma expects <bos>


def prepare(cfg: CircuitExperimentConfig, model, log, *, progress=None):
    ds, pairs = _dataset(cfg, model, progress=progress(f"{cfg.task} prompts") if progress else None)
    log(f"data: {len(ds)} {cfg.task} prompt pairs")
    reference = None
    if cfg.reference_run not in (None, "discover"):
        reference = _load_reference(cfg)
        log(f"reference circuit: {reference[0]}")
    return ds, pairs, reference


def estimate(cfg: CircuitExperimentConfig, model, data) -> dict[str, int]:
    """Forward passes per field to lower: up to four path-patching sweeps (into the logits, the
    movers' queries, the inhibition heads' values, the induction heads' keys), each one per
    (pair, head) plus the baselines, twice when the reference circuit is discovered too; the
    intervention's conditions on colored objects. With no model and data yet, a lower bound:
    one layer and head, the first sweep only."""
    L, H, sweeps = (model.spec.n_layers, model.spec.n_heads, 4) if model is not None else (1, 1, 1)
    n = data[1].n if data is not None else cfg.data.n_prompts
    circuits = 2 if cfg.reference_run == "discover" else 1
    costs = {"data.n_prompts": circuits * n * (sweeps * L * H + 2)}
    if cfg.task == "colored_objects" and cfg.intervention.enabled and cfg.reference_run is not None:
        costs["intervention.n_random"] = n * (2 + cfg.intervention.n_random)
    return costs


def memory(cfg: CircuitExperimentConfig, shape: ModelShape, data) -> dict[str, int]:
    """Bytes for `data.n_prompts`: the prompt pairs plus the largest path-patching chunk (block
    inputs of a length group at every layer, one forward of its rows stacked once per sender
    head of a layer). With no data yet, the generated prompts alone."""
    if data is None:
        return {"data.n_prompts": cfg.data.n_prompts * PROMPT_BYTES}
    pairs = data[1]
    return {"data.n_prompts": pairs.n * PROMPT_BYTES + pairs_peak(shape, pairs, variants(cfg.circuit.batch_size,
                                                                                     shape.n_heads))}


def _reference_tables(run) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    name = "path_patching_to_mover_queries"
    queries = run.read_table(name) if name in run.tables() else None
    return run.run_id, run.read_table("circuit_nodes"), queries


def _load_reference(cfg: CircuitExperimentConfig) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    store = RunStore(cfg.output.runs_dir)
    if cfg.reference_run == "latest":
        runs = store.list_runs()
        for r in runs.itertuples():
            if r.status != "complete":
                continue
            run = store.open(r.run_id)
            man = run.read_manifest()
            if man.get("kind") == "circuit" and man.get("config", {}).get("task") == "ioi" \
                    and man.get("model_id") == cfg.model.name and "circuit_nodes" in run.tables():
                return _reference_tables(run)
        raise ConfigError(
            f"no complete IOI circuit run for model {cfg.model.name} in {cfg.output.runs_dir}; run "
            "`interp run experiments/ioi_circuit.yaml` first, or set reference_run: discover",
            path="reference_run")
    run = store.open(cfg.reference_run)  # type: ignore[arg-type]
    if "circuit_nodes" not in run.tables():
        raise ConfigError(f"run {run.run_id} has no circuit_nodes table", path="reference_run")
    return _reference_tables(run)


def _circuit_result(done: str, prefix: str, c: CircuitResult, n_layers: int, title: str) -> StepResult:
    r = StepResult(done)
    for name, res in c.maps.items():
        r.tables[f"{prefix}path_patching_{name}"] = res.to_frame()
        r.figures[f"{prefix}path_patching_{name}"] = head_heatmap(
            res.to_frame(), "normalised", title=f"Path patching {name} (1 = no effect)")
    r.tables[f"{prefix}circuit_nodes"] = c.nodes
    r.tables[f"{prefix}circuit_edges"] = c.edges
    r.tables[f"{prefix}faithfulness"] = pd.DataFrame([c.faithfulness])
    fig = r.figures[f"{prefix}circuit"] = circuit_graph(c.nodes, c.edges, title=title, n_layers=n_layers)
    r.sections.append(ReportSection(title, text=(
        f"Faithfulness: with every other head mean-ablated the circuit keeps "
        f"{c.faithfulness['faithfulness']:.0%} of the model's metric ({c.faithfulness['circuit_metric']:.3f} "
        f"vs {c.faithfulness['full_metric']:.3f}; corrupt {c.faithfulness['corrupt_metric']:.3f}); "
        f"{c.faithfulness['n_heads_kept']} of {c.faithfulness['n_heads']} heads kept. " + " ".join(c.notes)),
        figure=fig, table=c.nodes))
    return r


def _summary_heads(c: CircuitResult) -> str:
    parts = []
    for cls, g in c.nodes.groupby("class", sort=False):
        parts.append(f"{cls}: " + ", ".join(f"L{r.layer}H{r.head} ({r.score:+.2f})" for r in g.itertuples()))
    return "; ".join(parts) or "no heads"


def _discover_kw(ctx: StepContext, step: str) -> dict:
    """discover_circuit's options from the config, with the runner's bars and, per path-patching
    sweep, the step's executor (shards stored as `<step>_<map name>`, so a resumed run reuses them)."""
    p, bars = ctx.cfg.circuit, {}

    def progress(stage, done, total):  # one runner-owned bar per path-patching stage
        if stage not in bars:
            bars[stage] = ctx.progress(f"path patching {stage}")
        bars[stage](done, total)

    return dict(k_movers=p.k_movers, k_negative=p.k_negative, k_inhibition=p.k_inhibition, k_upstream=p.k_upstream,
                k_previous=p.k_previous, threshold=p.threshold, freeze_mlps=p.freeze_mlps, metric=p.metric,
                batch_size=p.batch_size, pattern_seed=ctx.cfg.seed, progress=progress,
                executors=lambda name: ctx.executor(f"{step}_{name}"))


def dataset_step(ctx: StepContext) -> StepResult:
    return StepResult(tables={"dataset": flat_frame(ctx.data[0].to_frame())})


def accuracy_step(ctx: StepContext) -> StepResult | None:
    if ctx.cfg.task != "colored_objects":
        return None
    ds, pairs, _ = ctx.data
    acc = option_accuracy(ctx.model, pairs, ds)
    table = pd.DataFrame([{"accuracy": acc.accuracy, "n": acc.n, "chance": 1 / 3}])
    return StepResult("accuracy", tables={"accuracy": table},
                      summary=[f"colored objects accuracy (among the 3 options): "
                               f"{acc.accuracy:.0%} of {acc.n} (chance 33%)"])


def circuit_step(ctx: StepContext) -> StepResult:
    ds, pairs, _ = ctx.data
    circ = ctx.state["circuit"] = discover_circuit(ctx.model, pairs, ds, **_discover_kw(ctx, "circuit"))
    r = _circuit_result("circuit", "", circ, ctx.model.spec.n_layers, f"{ctx.cfg.task} circuit")
    r.tables["head_scores"] = circ.pattern_scores.to_frame()  # atlas format
    r.summary += [f"{ctx.cfg.task} circuit: {_summary_heads(circ)}",
                  f"faithfulness (others mean-ablated): {circ.faithfulness['faithfulness']:.0%} of the metric"]
    return r


def reference_step(ctx: StepContext) -> StepResult | None:
    """The reference IOI circuit: discovered in this run, or read from an earlier run."""
    cfg, reference = ctx.cfg, ctx.data[2]
    ctx.state["reference"] = reference
    if cfg.reference_run != "discover":
        return None
    ioi_ds, ioi_pairs = _dataset(cfg, ctx.model, "ioi")
    ref = discover_circuit(ctx.model, ioi_pairs, ioi_ds, **_discover_kw(ctx, "reference"))
    queries = ref.maps["to_mover_queries"].to_frame() if "to_mover_queries" in ref.maps else None
    ctx.state["reference"] = ("this run (discovered)", ref.nodes, queries)
    return _circuit_result("reference_circuit", "reference_", ref, ctx.model.spec.n_layers, "reference IOI circuit")


def overlap_step(ctx: StepContext) -> StepResult | None:
    ref = ctx.state["reference"]
    if ref is None or not len(ref[1]):
        return None
    ref_name, ref_nodes, _ = ref
    circ = ctx.state["circuit"]
    ov = circuit_overlap(CircuitResult(ref_nodes, pd.DataFrame(), {}, circ.pattern_scores, {}), circ)
    return StepResult("overlap", tables={"overlap": pd.DataFrame([ov])}, summary=[
        f"overlap with the IOI circuit ({ref_name}): Jaccard {ov['jaccard']:.2f}, "
        f"{ov['share_of_b_in_a']:.0%} of this circuit's heads are IOI circuit heads ({ov['n_shared']} of {ov['n_b']})"],
        sections=[ReportSection("Overlap with the IOI circuit", table=pd.DataFrame([ov]).T.reset_index())])


def _inhibition_heads(ref_nodes: pd.DataFrame, ref_queries, k: int) -> tuple[list, list[str]]:
    inhib = ref_nodes[ref_nodes["class"] == "s_inhibition"] if "class" in ref_nodes else ref_nodes.iloc[:0]
    heads = [(int(r.layer), int(r.head)) for r in inhib.itertuples()]
    if heads or ref_queries is None:
        return heads, []
    # No head passed the threshold into the movers' queries: take the strongest senders into
    # them anyway (the IOI circuit's best guess at inhibition heads).
    q = ref_queries.assign(effect=1.0 - ref_queries["normalised"]).dropna(subset=["effect"])
    top = q.sort_values("effect", ascending=False).head(max(k, 1))
    note = ("the IOI circuit has no inhibition head above the threshold; the intervention uses the strongest "
            "senders into its movers' queries: "
            + ", ".join(f"L{r.layer}H{r.head} ({r.effect:+.3f})" for r in top.itertuples()))
    return [(int(r.layer), int(r.head)) for r in top.itertuples()], [note]


def intervention_step(ctx: StepContext) -> StepResult | None:
    cfg, ref = ctx.cfg, ctx.state["reference"]
    if cfg.task != "colored_objects" or not cfg.intervention.enabled or ref is None or not len(ref[1]):
        return None
    heads, notes = _inhibition_heads(ref[1], ref[2], cfg.circuit.k_inhibition)
    if not heads:
        return StepResult(summary=["intervention skipped: the reference circuit has no s_inhibition heads"])
    ds, pairs, _ = ctx.data
    iv = intervention_experiment(ctx.model, pairs, ds, heads, n_random=cfg.intervention.n_random, seed=cfg.seed)
    ctrl = sum(iv.random_controls) / len(iv.random_controls) if iv.random_controls else float("nan")
    return StepResult("intervention", tables={"intervention": iv.to_frame()}, summary=[*notes, (
        f"intervention on the IOI inhibition heads {', '.join(f'L{a}H{b}' for a, b in heads)}: "
        f"accuracy {iv.before:.0%} -> {iv.after:.0%} (random heads, same layers: {ctrl:.0%} mean)")],
        sections=[ReportSection("Attention intervention (Merullo et al.)", table=iv.to_frame())])


register_kind("circuit", CircuitExperimentConfig, dataset_step, accuracy_step, circuit_step, reference_step,
              overlap_step, intervention_step, prepare=prepare, estimate=estimate, memory=memory)
