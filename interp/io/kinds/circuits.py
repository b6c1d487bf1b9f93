"""Experiment kind "circuit": discover a circuit by path patching on IOI or Colored Objects,
compare it with a reference (IOI) circuit, and on Colored Objects run Merullo et al.'s
attention intervention on the inhibition heads the IOI circuit predicts.

    kind: circuit
    task: ioi               # or colored_objects
    reference_run: latest   # colored_objects: the newest complete IOI circuit run in runs_dir
"""

from __future__ import annotations

from typing import Annotated, Literal

import pandas as pd
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, StrictBool, StrictStr

from interp.analyses.circuit import CircuitResult, circuit_overlap, discover_circuit
from interp.analyses.colored_objects import intervention_experiment, option_accuracy
from interp.core.errors import ConfigError
from interp.data.colored_objects import generate_colored_objects
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.io.config import ModelConfig, OutputConfig, _Section, register_experiment_kind
from interp.io.report import ReportSection
from interp.io.runner import RunOutcome, Task, register_task
from interp.io.runstore import RunStore
from interp.viz.circuits import circuit_graph
from interp.viz.heatmaps import head_heatmap


class CircuitDataConfig(_Section):
    n_prompts: PositiveInt = Field(8, description="an integer >= 1")
    corruption: Literal["abc", "flip"] = "abc"
    templates: tuple[NonNegativeInt, ...] | None = Field(
        (0, 2), description="ioi only: null (all) or a list of template indices")


class CircuitParams(_Section):
    k_movers: PositiveInt = 4
    k_negative: NonNegativeInt = 2
    k_inhibition: NonNegativeInt = 4
    k_upstream: NonNegativeInt = 4
    k_previous: NonNegativeInt = 3
    threshold: NonNegativeFloat = Field(0.02, description="a number >= 0 (normalised path effect)")
    freeze_mlps: StrictBool = False
    metric: Literal["logit_diff", "prob", "prob_diff"] = "logit_diff"
    batch_size: PositiveInt = 64


class InterventionConfig(_Section):
    enabled: StrictBool = True
    n_random: NonNegativeInt = Field(3, description="random-head controls (seeds)")


class CircuitExperimentConfig(_Section):
    kind: Literal["circuit"] = "circuit"
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        description="a name of letters, digits, '_' and '-' (used in the run directory name)")
    description: StrictStr = ""
    seed: NonNegativeInt = 0
    model: ModelConfig = ModelConfig()
    task: Literal["ioi", "colored_objects"] = "ioi"
    data: CircuitDataConfig = CircuitDataConfig()
    circuit: CircuitParams = CircuitParams()
    reference_run: StrictStr | None = Field(
        None, description="null, 'latest' (newest complete IOI circuit run in runs_dir), "
        "'discover' (find the IOI circuit in this run too) or a run id/path")
    intervention: InterventionConfig = InterventionConfig()
    output: OutputConfig = OutputConfig()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


register_experiment_kind("circuit", CircuitExperimentConfig)


def _dataset(cfg: CircuitExperimentConfig, model, task: str | None = None):
    task = task or cfg.task
    d = cfg.data
    if task == "ioi":
        ds = generate_ioi(d.n_prompts, model.tokenizer, seed=cfg.seed, corruption=d.corruption,
                          templates=list(d.templates) if d.templates is not None else None)
    else:
        ds = generate_colored_objects(d.n_prompts, model.tokenizer, seed=cfg.seed)
    return ds, tokenize_pairs(ds, model.tokenizer, prepend_bos=model.prepend_bos)  # Gemma expects <bos>


def _prepare(cfg: CircuitExperimentConfig, model, log):
    ds, pairs = _dataset(cfg, model)
    log(f"data: {len(ds)} {cfg.task} prompt pairs")
    reference = None
    if cfg.reference_run not in (None, "discover"):
        reference = _load_reference(cfg)
        log(f"reference circuit: {reference[0]}")
    return ds, pairs, reference


def _reference_tables(run) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    queries = run.read_table("path_patching_to_mover_queries") if "path_patching_to_mover_queries" in run.tables() else None
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


def _write_circuit(out: RunOutcome, prefix: str, c: CircuitResult, n_layers: int, title: str) -> None:
    run = out.run
    for name, res in c.maps.items():
        run.write_table(f"{prefix}path_patching_{name}", res.to_frame())
        run.write_figure(f"{prefix}path_patching_{name}", head_heatmap(
            res.to_frame(), "normalised", title=f"Path patching {name} (1 = no effect)"))
    run.write_table(f"{prefix}circuit_nodes", c.nodes)
    run.write_table(f"{prefix}circuit_edges", c.edges)
    run.write_table(f"{prefix}faithfulness", pd.DataFrame([c.faithfulness]))
    fig = circuit_graph(c.nodes, c.edges, title=title, n_layers=n_layers)
    run.write_figure(f"{prefix}circuit", fig)
    out.sections.append(ReportSection(title, text=(
        f"Faithfulness: with every other head mean-ablated the circuit keeps "
        f"{c.faithfulness['faithfulness']:.0%} of the model's metric ({c.faithfulness['circuit_metric']:.3f} "
        f"vs {c.faithfulness['full_metric']:.3f}; corrupt {c.faithfulness['corrupt_metric']:.3f}); "
        f"{c.faithfulness['n_heads_kept']} of {c.faithfulness['n_heads']} heads kept. " + " ".join(c.notes)),
        figure=fig, table=c.nodes))


def _summary_heads(c: CircuitResult) -> str:
    parts = []
    for cls, g in c.nodes.groupby("class", sort=False):
        parts.append(f"{cls}: " + ", ".join(f"L{r.layer}H{r.head} ({r.score:+.2f})" for r in g.itertuples()))
    return "; ".join(parts) or "no heads"


def _execute(cfg: CircuitExperimentConfig, model, prepared, out: RunOutcome, show: bool, log) -> None:
    ds, pairs, reference = prepared
    p = cfg.circuit
    run = out.run
    run.write_table("dataset", ds.to_frame().map(lambda v: str(v) if isinstance(v, dict | list | tuple) else v))
    L = model.spec.n_layers

    def progress(stage, done, total):
        if show and done == total:
            log(f"  {stage}: {total} senders done")

    if cfg.task == "colored_objects":
        acc = option_accuracy(model, pairs, ds)
        run.write_table("accuracy", pd.DataFrame([{"accuracy": acc.accuracy, "n": acc.n, "chance": 1 / 3}]))
        out.summary.append(f"colored objects accuracy (among the 3 options): {acc.accuracy:.0%} of {acc.n} (chance 33%)")
        out.finished("accuracy")

    kw = dict(k_movers=p.k_movers, k_negative=p.k_negative, k_inhibition=p.k_inhibition, k_upstream=p.k_upstream,
              k_previous=p.k_previous, threshold=p.threshold, freeze_mlps=p.freeze_mlps, metric=p.metric,
              batch_size=p.batch_size, pattern_seed=cfg.seed, progress=progress)
    circ = discover_circuit(model, pairs, ds, **kw)
    _write_circuit(out, "", circ, L, f"{cfg.task} circuit")
    run.write_table("head_scores", circ.pattern_scores.to_frame())  # atlas format
    out.summary.append(f"{cfg.task} circuit: {_summary_heads(circ)}")
    out.summary.append(f"faithfulness (others mean-ablated): {circ.faithfulness['faithfulness']:.0%} of the metric")
    out.finished("circuit")

    ref_name, ref_nodes, ref_queries = None, None, None
    if cfg.reference_run == "discover":
        ioi_ds, ioi_pairs = _dataset(cfg, model, "ioi")
        ref = discover_circuit(model, ioi_pairs, ioi_ds, **kw)
        _write_circuit(out, "reference_", ref, L, "reference IOI circuit")
        ref_name, ref_nodes = "this run (discovered)", ref.nodes
        if "to_mover_queries" in ref.maps:
            ref_queries = ref.maps["to_mover_queries"].to_frame()
        out.finished("reference_circuit")
    elif reference is not None:
        ref_name, ref_nodes, ref_queries = reference
    if ref_nodes is not None and len(ref_nodes):
        ref_c = CircuitResult(ref_nodes, pd.DataFrame(), {}, circ.pattern_scores, {})
        ov = circuit_overlap(ref_c, circ)
        run.write_table("overlap", pd.DataFrame([ov]))
        out.summary.append(f"overlap with the IOI circuit ({ref_name}): Jaccard {ov['jaccard']:.2f}, "
                           f"{ov['share_of_b_in_a']:.0%} of this circuit's heads are IOI circuit heads "
                           f"({ov['n_shared']} of {ov['n_b']})")
        out.sections.append(ReportSection("Overlap with the IOI circuit", table=pd.DataFrame([ov]).T.reset_index()))
        out.finished("overlap")
        if cfg.task == "colored_objects" and cfg.intervention.enabled:
            inhib = ref_nodes[ref_nodes["class"] == "s_inhibition"] if "class" in ref_nodes else ref_nodes.iloc[:0]
            heads = [(int(r.layer), int(r.head)) for r in inhib.itertuples()]
            if not heads and ref_queries is not None:
                # No head passed the threshold into the movers' queries: take the strongest
                # senders into them anyway (the IOI circuit's best guess at inhibition heads).
                q = ref_queries.assign(effect=1.0 - ref_queries["normalised"]).dropna(subset=["effect"])
                top = q.sort_values("effect", ascending=False).head(max(cfg.circuit.k_inhibition, 1))
                heads = [(int(r.layer), int(r.head)) for r in top.itertuples()]
                out.summary.append("the IOI circuit has no inhibition head above the threshold; the intervention "
                                   "uses the strongest senders into its movers' queries: "
                                   + ", ".join(f"L{r.layer}H{r.head} ({r.effect:+.3f})" for r in top.itertuples()))
            if heads:
                iv = intervention_experiment(model, pairs, ds, heads, n_random=cfg.intervention.n_random, seed=cfg.seed)
                run.write_table("intervention", iv.to_frame())
                ctrl = sum(iv.random_controls) / len(iv.random_controls) if iv.random_controls else float("nan")
                out.summary.append(
                    f"intervention on the IOI inhibition heads {', '.join(f'L{a}H{b}' for a, b in heads)}: "
                    f"accuracy {iv.before:.0%} -> {iv.after:.0%} (random heads, same layers: {ctrl:.0%} mean)")
                out.sections.append(ReportSection("Attention intervention (Merullo et al.)", table=iv.to_frame()))
                out.finished("intervention")
            else:
                out.summary.append("intervention skipped: the reference circuit has no s_inhibition heads")


register_task("circuit", Task(prepare=_prepare, execute=_execute))
