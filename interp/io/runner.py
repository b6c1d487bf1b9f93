"""Run an experiment config end to end: model, data, analyses, tables, figures, report.

Each analysis writes its tables and figures as soon as it finishes and records itself in the
manifest, so a run that fails later keeps what it finished (status "failed" with the error).

    cfg = load_config("experiments/ioi.yaml")
    run = run_experiment(cfg, config_path="experiments/ioi.yaml")
    run.read_table("head_patching")
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.analyses.accuracy import task_accuracy
from interp.analyses.dla import direct_logit_attribution
from interp.analyses.head_patterns import head_pattern_scores
from interp.analyses.patching import patch_heads, patch_residual
from interp.core.model import HookedModel
from interp.data.ioi import generate_ioi
from interp.data.pairs import PairDataset, TokenizedPairs, load_jsonl, tokenize_pairs
from interp.io.config import ExperimentConfig, resolve_for_model, resolve_prepend_bos
from interp.io.report import ReportSection, write_report
from interp.io.runstore import Run, RunStore, build_manifest
from interp.models.loading import load_model
from interp.viz.heatmaps import dla_bar, head_heatmap, position_heatmap

Log = Callable[[str], None]


@dataclass
class RunOutcome:
    """What a task has produced so far: report sections, summary lines, finished analyses."""

    run: Run
    sections: list[ReportSection] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def finished(self, analysis: str) -> None:
        """Record an analysis as done (its tables are written): a later failure keeps it."""
        self.done.append(analysis)
        self.run.update_manifest(analyses_done=list(self.done))


@dataclass(frozen=True)
class Task:
    """One experiment kind's body. `prepare` runs before the run directory exists (bad data
    fails without leaving an empty run); `execute` writes tables/figures into the run."""

    prepare: Callable[[Any, HookedModel, Log], Any]
    execute: Callable[[Any, HookedModel, Any, RunOutcome, bool, Log], None]


TASKS: dict[str, Task] = {}


def register_task(kind: str, task: Task) -> None:
    TASKS[kind] = task


def load_data(cfg: ExperimentConfig, model: HookedModel) -> tuple[PairDataset, TokenizedPairs, TokenizedPairs]:
    """(dataset, its tokenized pairs, the pairs used for maps resolved by position)."""
    d = cfg.data
    bos = resolve_prepend_bos(d.prepend_bos, model)  # unset: the model's own prepend_bos
    if d.source == "jsonl":
        ds = load_jsonl(d.path)
        pairs = tokenize_pairs(ds, model.tokenizer, prepend_bos=bos, source_file=str(d.path))
        return ds, pairs, pairs
    templates = list(d.templates) if d.templates is not None else None
    ds = generate_ioi(d.n_prompts, model.tokenizer, seed=cfg.seed, corruption=d.corruption, templates=templates)
    pairs = tokenize_pairs(ds, model.tokenizer, prepend_bos=bos)
    pos_ds = generate_ioi(d.position_n_prompts, model.tokenizer, seed=cfg.seed, corruption=d.corruption,
                          templates=[d.position_template])
    return ds, pairs, tokenize_pairs(pos_ds, model.tokenizer, prepend_bos=bos)


def run_experiment(
    cfg: Any,
    *,
    config_path: str | Path | None = None,
    runs_dir: str | Path | None = None,
    show_progress: bool = True,
    log: Log = print,
    model: HookedModel | None = None,
) -> Run:
    """Run any registered experiment kind (`cfg.kind`) end to end and return its run."""
    kind = getattr(cfg, "kind", "patching")
    if kind not in TASKS:
        raise ValueError(f"no runner for experiment kind {kind!r}; known: {', '.join(TASKS)}")
    task = TASKS[kind]
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if model is None:
        log(f"loading model {cfg.model.name} ({cfg.model.device}, {cfg.model.dtype})")
        model = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype, seed=cfg.seed)
    # Defaults that follow the model (data.chat, data.prepend_bos) become plain true/false here,
    # before any data is built: a setting the model cannot honour fails in one line, and the
    # manifest records what was used.
    cfg = resolve_for_model(cfg, model)
    prepared = task.prepare(cfg, model, log)

    run = RunStore(runs_dir or cfg.output.runs_dir).create(cfg.name)
    manifest = build_manifest(
        cfg.to_dict(), model_id=model.name, weights_sha256=model.weights_sha256, seed=cfg.seed,
        extra={
            "experiment": str(config_path) if config_path else None,
            "kind": kind,
            "backend": model.backend,
            "device": str(model.device),
            "model_spec": vars(model.spec),
            "analyses_done": [],
        },
    )
    run.write_manifest(manifest)
    log(f"run directory: {run.path}")
    out = RunOutcome(run)
    try:
        task.execute(cfg, model, prepared, out, show_progress, log)
    except BaseException as e:
        run.mark("failed", error=e)
        _report(run, cfg, out, failed=True)
        raise
    run.update_manifest(duration_s=round(time.perf_counter() - t0, 2))
    run.mark("complete")
    path = _report(run, cfg, out)
    log("")
    for line in out.summary:
        log(line)
    log(f"report: {path}")
    return run


def _prepare_patching(cfg: ExperimentConfig, model: HookedModel, log: Log):
    ds, pairs, pos_pairs = load_data(cfg, model)
    log(f"data: {len(ds)} prompt pairs ({ds.name}); {len(pairs.by_length().batches)} token-length groups")
    return ds, pairs, pos_pairs


def _execute_patching(cfg: ExperimentConfig, model: HookedModel, prepared, out: RunOutcome, show: bool, log: Log) -> None:
    ds, pairs, pos_pairs = prepared
    out.run.update_manifest(dataset={"name": ds.name, "n": len(ds), "source": ds.source})
    out.run.write_table("dataset", _flat(ds))
    _analyses(cfg, model, ds, pairs, pos_pairs, out.run, out, show, log)


def _flat(ds: PairDataset):
    df = ds.to_frame()
    for c in df.columns:
        if df[c].map(lambda v: isinstance(v, dict | list | tuple)).any():
            df[c] = df[c].map(str)
    return df


def _progress(desc: str, show: bool):
    # disable=None: no bar when stderr is not a terminal (CI logs stay readable)
    bar = tqdm(total=0, desc=desc, disable=None if show else True, leave=True)

    def fn(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, fn


def _analyses(cfg, model, ds, pairs, pos_pairs, run: Run, out: RunOutcome, show: bool, log: Log) -> None:
    a = cfg.analyses
    k = cfg.output.top_k
    finished = out.finished

    if a.accuracy.enabled:
        acc = task_accuracy(model, pairs, ds)
        run.write_table("accuracy", acc.to_frame())
        s = acc.summary()
        run.write_text("accuracy.json", __import__("json").dumps(s, indent=2))
        line = (f"accuracy: top-1 = answer on {s['top1_accuracy']:.0%} of {s['n_prompts']} prompts; "
                f"logit diff clean {s['mean_clean_logit_diff']:.2f}, corrupt {s['mean_corrupt_logit_diff']:.2f}; "
                f"logit diff > 0 on {s['logit_diff_positive_rate']:.0%}")
        out.summary.append(line)
        out.sections.append(ReportSection("Task accuracy", text=line, table=acc.to_frame(), table_max_rows=k))
        finished("accuracy")

    if a.head_patching.enabled:
        hp = a.head_patching
        bar, prog = _progress("head patching", show)
        res = patch_heads(model, pairs, direction=hp.direction, metric=hp.metric, batch_size=hp.batch_size, progress=prog)
        bar.close()
        df = res.to_frame()
        run.write_table("head_patching", df)
        fig = head_heatmap(df, "normalised", title=f"Head output patching ({hp.direction}, {hp.metric}, normalised)")
        run.write_figure("head_patching", fig)
        top = res.top(k)
        heads = ", ".join(f"L{r.layer}H{r.head} ({r.normalised:+.2f})" for r in top.itertuples())
        out.summary.append(f"top heads by patching ({hp.direction}, normalised): {heads}")
        out.sections.append(ReportSection(
            "Head patching",
            text=(f"Each head's output (all positions) patched {'clean into corrupt' if hp.direction == 'denoising' else 'corrupt into clean'}; "
                  f"{res.n_prompts} prompts; clean metric {res.clean_metric:.3f}, corrupt {res.corrupt_metric:.3f}. "
                  "1 = fully clean behaviour, 0 = corrupt."),
            figure=fig, table=top))
        finished("head_patching")
        if hp.per_position:
            bar, prog = _progress("head patching per position", show)
            rp = patch_heads(model, pos_pairs, direction=hp.direction, metric=hp.metric, per_position=True,
                             batch_size=hp.batch_size, progress=prog)
            bar.close()
            dfp = rp.to_frame()
            run.write_table("head_patching_per_position", dfp)
            out.sections.append(ReportSection("Head patching per position", table=rp.top(k)))
            finished("head_patching_per_position")

    if a.residual_patching.enabled:
        rp_cfg = a.residual_patching
        bar, prog = _progress("residual patching", show)
        res = patch_residual(model, pos_pairs, components=rp_cfg.components, direction=rp_cfg.direction,
                             metric=rp_cfg.metric, batch_size=rp_cfg.batch_size, progress=prog)
        bar.close()
        df = res.to_frame()
        run.write_table("residual_patching", df)
        fig = position_heatmap(df, "normalised", token_labels=res.token_labels,
                               title=f"Residual patching per (layer, position) ({rp_cfg.direction}, normalised)")
        run.write_figure("residual_patching", fig)
        out.sections.append(ReportSection(
            "Residual stream, attention and MLP patching",
            text=f"{res.n_prompts} prompts of one template: {''.join(res.token_labels or [])!r}",
            figure=fig, table=res.top(k)))
        finished("residual_patching")

    if a.dla.enabled:
        dla = direct_logit_attribution(model, pairs)
        df = dla.to_frame()
        run.write_table("dla", df)
        run.write_table("dla_per_prompt", dla.per_prompt_frame())
        fig = dla_bar(df, top_k=20, title="Direct logit attribution (mean over prompts)")
        run.write_figure("dla", fig)
        heads = df[df.kind == "head"].copy()
        run.write_figure("dla_heads", head_heatmap(heads, "contribution", title="DLA per head"))
        top = heads.reindex(heads.contribution.abs().sort_values(ascending=False).index).head(k)
        out.summary.append("top heads by DLA: " + ", ".join(f"{r.label} ({r.contribution:+.2f})" for r in top.itertuples()))
        out.summary.append(f"DLA check: parts sum to the logit difference within {dla.max_abs_error:.2e} "
                           f"({dla.verdict}; largest attention remainder {dla.max_remainder:.1e} of a head term)")
        assumed = "; ".join(dla.approximations)
        out.sections.append(ReportSection(
            "Direct logit attribution",
            text=f"Contributions to logit(answer) - logit(distractor) at the last position; they sum to the model's value within {dla.max_abs_error:.2e}. Assumed: {assumed}.",
            figure=fig, table=top))
        finished("dla")

    if a.head_patterns.enabled:
        hp = a.head_patterns
        pat = head_pattern_scores(model, n=hp.n_sequences, seq_len=hp.seq_len, seed=cfg.seed)
        df = pat.to_frame()
        run.write_table("head_scores", df)  # the atlas reads these by score name
        parts = []
        for name in pat.scores:
            part = df[df.score == name].sort_values("value", ascending=False).head(3)
            parts.append(f"{name}: " + ", ".join(f"L{r.layer}H{r.head} ({r.value:.2f})" for r in part.itertuples()))
            run.write_figure(f"head_pattern_{name}", head_heatmap(df[df.score == name], "value",
                                                                  title=f"{name} score per head"))
        out.summary.append("head pattern scores (top 3): " + "; ".join(parts))
        out.sections.append(ReportSection("Head pattern scores", text=(
            f"Attention-pattern scores on {pat.n_sequences} sequences of {pat.seq_len} random tokens repeated "
            "twice: previous-token (attention to q-1), duplicate-token (to the earlier copy of the same token), "
            "induction (to the token after the earlier copy). " + "; ".join(parts) + "."),
            table=df.pivot_table(index=["layer", "head"], columns="score", values="value").reset_index()
            .rename_axis(columns=None)  # no stray "score" header column in the HTML table
            .sort_values("induction", ascending=False), table_max_rows=k))
        finished("head_patterns")


def _report(run: Run, cfg: Any, out: RunOutcome, failed: bool = False) -> Path:
    lines = list(out.summary)
    if failed:
        lines.insert(0, "This run FAILED; the sections below are the analyses it finished.")
    return write_report(run, title=f"{cfg.name}: {cfg.description or 'experiment'}", summary_lines=lines,
                        sections=out.sections)


register_task("patching", Task(prepare=_prepare_patching, execute=_execute_patching))
