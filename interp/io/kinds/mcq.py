"""Experiment kind ``mcq_letters``: the heads that write the answer letter of a multiple-choice
question, and how low-rank their query and key are (Lieberum et al. 2023, "Does Circuit
Analysis Interpretability Scale?", on the bundled SmolLM2-135M-Instruct).

Steps: MCQ accuracy (the configured format, randomised labels, and for comparison Lieberum's
direct letter format); direct logit attribution and head patching to find the correct-letter
heads; for the top heads, SVD of the query (last position) and key (label tokens) and the letter
metric kept at each rank, on normal labels and on randomised labels (with the subspace fitted
on normal labels, and on the randomised labels themselves).

    kind: mcq_letters
    name: mcq_letters
    data: {n_prompts: 64, format: content_letter}
    analyses: {compression: {n_heads: 3, ranks: [0, 1, 2, 3, 4, 8, 16, 64]}}

Registered on import (`interp.io.registry.load_kinds` imports every module of this package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import (
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from interp.analyses.mcq import (
    QKCompressionResult,
    compress_qk,
    fit_head_subspaces,
    mcq_accuracy,
)
from interp.core.errors import ConfigError
from interp.data.mcq import generate_mcq
from interp.data.pairs import PairDataset, tokenize_pairs
from interp.io import schema
from interp.io.limits import PROMPT_BYTES, ModelShape, pairs_peak, variants
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.schema import (
    BaseExperimentConfig,
    ChatSetting,
    ConfigPath,
    Enabled,
    FieldError,
    MetricName,
    NonNegativeInt,
    PositiveInt,
    Section,
    Unique,
    chat_setting,
    unique_items,
)
from interp.io.shared_steps import DlaWording, dla_step, head_patching_step
from interp.io.step import StepContext, StepResult, flat_frame
from interp.viz.mcq import rank_curves, rank_label


class MCQDataConfig(Section):
    n_prompts: PositiveInt = Field(64, description="an integer >= 1 (questions; items cycle past the file's count)")
    items: Annotated[Path | None, ConfigPath("items file")] = Field(
        None, description="null (the bundled data/mcq_items.jsonl) or a path to an items JSONL file")
    format: Literal["content_letter", "letter"] = "content_letter"
    chat: ChatSetting = None
    random_labels: StrictBool = Field(True, description="true or false: also build the randomised-labels control set")
    compare_letter_format: StrictBool = Field(
        True, description="true or false: also measure accuracy on Lieberum's direct letter format")

    @property
    def source(self) -> str:
        """What `interp validate` prints as the data source."""
        return f"mcq items ({self.format}, {self.n_prompts} prompts)"


class MCQPatchingConfig(Enabled):
    positions: Literal["last", "all"] = Field(
        "last", description="'last' (each head patched at the answer position; a few forwards) or "
        "'all' (every position; one forward per layer and head group, much slower)")
    direction: Literal["denoising", "noising"] = "denoising"
    metric: MetricName = "logit_diff"
    batch_size: schema.BatchSizeSetting = Field(
        64, description="an integer >= 1 or 'auto' (max patch variants per forward)")


class CompressionConfig(Enabled):
    n_heads: PositiveInt = Field(3, description="an integer >= 1 (top heads to compress)")
    select_by: Literal["dla", "patching"] = "dla"
    heads: tuple[tuple[NonNegativeInt, NonNegativeInt], ...] | None = Field(
        None, description="null (the top heads by select_by) or a list of [layer, head] pairs")
    ranks: Annotated[tuple[NonNegativeInt, ...], Unique()] = Field(
        (0, 1, 2, 3, 4, 8, 16, 64), min_length=1,
        description="a non-empty list of integers >= 0 (0 = the mean only; >= d_head = full rank)")
    variants: Annotated[tuple[Literal["q", "k", "qk"], ...], Unique()] = Field(
        ("q", "k", "qk"), min_length=1, description="a non-empty list of: q, k, qk")
    key_positions: Literal["labels", "all"] = "labels"

    @field_validator("heads")
    @classmethod
    def _heads(cls, heads: tuple | None) -> tuple | None:
        if heads is not None and not heads:
            raise ValueError("empty list; give [layer, head] pairs, or null for the top heads")
        return None if heads is None else unique_items(heads, "heads")


class MCQAnalysesConfig(Section):
    accuracy: Enabled = Enabled()
    dla: Enabled = Enabled()
    head_patching: MCQPatchingConfig = MCQPatchingConfig()
    compression: CompressionConfig = CompressionConfig()

    @model_validator(mode="after")
    def _selection_source(self) -> MCQAnalysesConfig:
        c = self.compression
        if c.enabled and c.heads is None:
            source = {"dla": self.dla, "patching": self.head_patching}[c.select_by]
            if not source.enabled:
                other = "dla" if c.select_by == "dla" else "head_patching"
                raise FieldError("compression.select_by", f"{c.select_by!r} needs analyses.{other}.enabled: true "
                                  "(or give compression.heads explicitly)")
        return self


class MCQLettersConfig(BaseExperimentConfig):
    kind: Literal["mcq_letters"] = "mcq_letters"
    data: MCQDataConfig = MCQDataConfig()
    analyses: MCQAnalysesConfig = MCQAnalysesConfig()


# ------------------------------------------------------------------------------------ runner


def _datasets(cfg: MCQLettersConfig, model, progress=None) -> dict[str, tuple[PairDataset, object]]:
    d = cfg.data
    kw = dict(chat=d.chat, items=d.items)
    wanted = {"normal": dict(fmt=d.format)}
    if d.random_labels:
        wanted["random"] = dict(fmt=d.format, random_labels=True)
    if d.compare_letter_format and d.format != "letter":
        wanted["letter_format"] = dict(fmt="letter")
    out = {}
    for name, extra in wanted.items():
        ds = generate_mcq(d.n_prompts, model.tokenizer, seed=cfg.seed, **kw, **extra,
                          progress=progress(f"MCQ prompts ({name})") if progress else None)
        out[name] = (ds, tokenize_pairs(ds, model.tokenizer, source_file=str(d.items) if d.items else None))
    return out


def prepare(cfg: MCQLettersConfig, model, log, *, progress=None):
    sets = _datasets(cfg, model, progress)
    for name, (ds, pairs) in sets.items():
        log(f"data {name}: {len(ds)} MCQ pairs ({ds.source['fmt']}, {len(pairs.by_length().batches)} token lengths; "
            f"{ds.source['n_dropped_unequal_length']} dropped for unequal clean/corrupt lengths)")
    c = cfg.analyses.compression
    if c.enabled and c.heads:
        L, H = model.spec.n_layers, model.spec.n_heads
        for i, (layer, head) in enumerate(c.heads):
            if layer >= L or head >= H:
                raise ConfigError(f"head [{layer}, {head}] does not exist in {model.name} "
                                  f"(layers 0..{L - 1}, heads 0..{H - 1})", path=f"analyses.compression.heads[{i}]")
    return sets


def _fmt_curve(frame: pd.DataFrame, d_head: int) -> str:
    g = frame.sort_values("rank")
    return ", ".join(f"r={rank_label(int(r.rank), d_head)} {r.share_logit_diff:.2f}" for r in g.itertuples())


def check(cfg: MCQLettersConfig, tokenizer) -> list[str]:
    """The items file and the answer letters, with the tokenizer only (no weights)."""
    d = cfg.data
    chat = chat_setting(d.chat, tokenizer, cfg.model.name)
    ds = generate_mcq(d.n_prompts, tokenizer, seed=cfg.seed, fmt=d.format, chat=chat, items=d.items)
    return [f"data: {len(ds)} MCQ pairs from {d.items or 'the bundled items'}, all valid"]


def estimate(cfg: MCQLettersConfig, model, sets) -> dict[str, int]:
    """Forward passes per field to lower: head patching (one per pair and head, times the
    positions when patching all of them) and q/k compression (one per pair, head, variant, rank
    and condition). With no model and data yet, a lower bound (one layer, head and position)."""
    a = cfg.analyses
    L, H = (model.spec.n_layers, model.spec.n_heads) if model is not None else (1, 1)
    n = sets["normal"][1].n if sets is not None else cfg.data.n_prompts
    controls = ("random" in sets) if sets is not None else cfg.data.random_labels
    costs = {"data.n_prompts": 2 * n, "analyses.head_patching.positions": 0, "analyses.compression.ranks": 0}
    if a.head_patching.enabled:
        per_pair = 1
        if a.head_patching.positions != "last" and sets is not None:
            per_pair = max(b.clean.shape[1] for b in sets["normal"][1].batches)
        costs["analyses.head_patching.positions"] = n * L * H * per_pair
    c = a.compression
    if c.enabled:
        n_heads = len(c.heads) if c.heads is not None else c.n_heads
        costs["analyses.compression.ranks"] = n * n_heads * len(c.variants) * len(c.ranks) * (3 if controls else 1)
    return costs


def memory(cfg: MCQLettersConfig, shape: ModelShape, sets) -> dict[str, int]:
    """Bytes for `data.n_prompts`: the prompt pairs of every set plus the largest head-patching
    chunk (block inputs of a length group, its rows stacked once per head of a layer). With no
    data yet, the generated prompts alone."""
    if sets is None:
        n_sets = 1 + cfg.data.random_labels + (cfg.data.compare_letter_format and cfg.data.format != "letter")
        return {"data.n_prompts": n_sets * cfg.data.n_prompts * PROMPT_BYTES}
    hp = cfg.analyses.head_patching
    peak = pairs_peak(shape, sets["normal"][1], variants(hp.batch_size, shape.n_heads)) if hp.enabled else 0
    return {"data.n_prompts": sum(p.n for _, p in sets.values()) * PROMPT_BYTES + peak}


def _rank_for(frame: pd.DataFrame, share: float) -> str:
    ok = frame[frame["share_logit_diff"] >= share].sort_values("rank")
    return str(int(ok["rank"].iloc[0])) if len(ok) else "-"


def dataset_step(ctx: StepContext) -> StepResult:
    sets = ctx.data
    ds = sets["normal"][0]
    frame = pd.concat([flat_frame(s[0].to_frame(), json.dumps).assign(set=n) for n, s in sets.items()])
    return StepResult(tables={"dataset": frame},
                      manifest={"task": "mcq", "dataset": {"name": ds.name, "n": len(ds), "source": ds.source}})


def _accuracy_line(name: str, fmt: str, s: dict) -> str:
    return (f"{name} ({fmt}): {s['accuracy']:.0%} of {s['n_prompts']} "
            f"(chance {s['chance']:.0%}; letter logit diff {s['mean_letter_logit_diff']:+.2f}; "
            f"{s['mean_letter_mass']:.0%} of the probability on the letters; the most predicted "
            f"option slot takes {s['most_predicted_option_share']:.0%} of the answers)")


def accuracy_step(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.accuracy.enabled:
        return None
    frames, lines, summaries = [], [], {}
    for name, (dsn, pn) in ctx.data.items():
        acc = mcq_accuracy(ctx.model, pn, dsn)
        summaries[name] = s = acc.summary()
        frames.append(acc.to_frame().assign(set=name, fmt=dsn.source["fmt"]))
        lines.append(_accuracy_line(name, dsn.source["fmt"], s))
    text = ("Top-1 among the four option letters (letter logit diff = correct minus the mean of the other "
            "three). " + " ".join(lines) + "\n\ncontent_letter: the assistant turn states the answer's "
            "content and the model gives its label ('... night (B) ...' then 'night (' -> 'B'); "
            "letter: Lieberum's format ('B. night', 'Answer:' -> ' B').")
    return StepResult("accuracy", tables={"accuracy": pd.concat(frames)},
                      texts={"accuracy.json": json.dumps(summaries, indent=2)},
                      summary=["MCQ accuracy, top-1 among the four letters: " + "; ".join(lines)],
                      sections=[ReportSection("MCQ accuracy", text=text,
                                              table=pd.DataFrame(summaries).T.reset_index(names="set"))])


_DLA = DlaWording(
    heads_title="DLA per head: correct letter minus distractor letter",
    summary_label="top heads by DLA (to the correct letter)", signed=True, section_figure="heads", check_line=False,
    text=lambda dla: ("Each head's direct contribution to logit(correct letter) - logit(distractor letter) at the "
                      f"last position, mean over the prompts; the parts sum to the model's value within "
                      f"{dla.max_abs_error:.1e}."))


def dla(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.dla.enabled:
        return None
    result, ctx.state["dla_heads"] = dla_step(ctx.model, ctx.data["normal"][1], ctx.cfg.output.top_k, _DLA)
    return result


def head_patching(ctx: StepContext) -> StepResult | None:
    hp = ctx.cfg.analyses.head_patching
    if not hp.enabled:
        return None
    result, ctx.state["patch_frame"] = head_patching_step(
        ctx.model, ctx.data["normal"][1], hp, ctx.cfg.output.top_k, ctx.progress("head patching"),
        last_position=hp.positions == "last", score_prefix="mcq",
        note="The corrupt prompt swaps the contents of the correct and the distractor option, so the "
        "correct letter changes; 1 = the patch restores the clean answer.")
    return result


def compression(ctx: StepContext) -> StepResult | None:
    c, sets, model = ctx.cfg.analyses.compression, ctx.data, ctx.model
    if not c.enabled:
        return None
    ds, pairs = sets["normal"]
    heads_df = _select_heads(c, ctx.state.get("dla_heads"), ctx.state.get("patch_frame"))
    heads = [(int(r.layer), int(r.head)) for r in heads_df.itertuples()]
    ctx.log(f"compressing q/k of {', '.join(f'L{x}H{y}' for x, y in heads)}")
    fits = {"normal": fit_head_subspaces(model, pairs, ds, heads, key_positions=c.key_positions)}
    conditions = [("normal", "normal")]
    if "random" in sets:
        rds, rpairs = sets["random"]
        fits["random"] = fit_head_subspaces(model, rpairs, rds, heads, key_positions=c.key_positions)
        conditions += [("random", "random"), ("random", "normal")]
    comp = compress_qk(model, {n: sets[n] for n in fits}, fits, list(c.ranks), variants=list(c.variants),
                       conditions=conditions, progress=ctx.progress("q/k compression"))
    frame = comp.to_frame()
    result = StepResult("qk_compression", tables={
        "letter_heads": heads_df,
        "qk_subspaces": pd.concat([hs.to_frame().assign(fit=f) for f, per in fits.items() for hs in per.values()]),
        "qk_compression": frame})
    _compression_report(comp, frame, fits, heads_df, c, result)
    return result


def _select_heads(c: CompressionConfig, dla_heads: pd.DataFrame | None, patch: pd.DataFrame | None) -> pd.DataFrame:
    if c.heads is not None:
        df = pd.DataFrame([{"layer": x, "head": y} for x, y in c.heads])
    elif c.select_by == "dla":
        df = dla_heads.head(c.n_heads)[["layer", "head"]]  # type: ignore[union-attr]
    else:
        base = 0.0 if patch["direction"].iloc[0] == "denoising" else 1.0  # type: ignore[index]
        order = (patch["normalised"] - base).abs().sort_values(ascending=False).index  # type: ignore[index]
        df = patch.loc[order[: c.n_heads], ["layer", "head"]]  # type: ignore[union-attr]
    df = df.astype({"layer": int, "head": int}).reset_index(drop=True)
    df["label"] = [f"L{x}H{y}" for x, y in zip(df["layer"], df["head"], strict=True)]
    if dla_heads is not None:
        df = df.merge(dla_heads[["layer", "head", "contribution"]].astype({"layer": int, "head": int}),
                      on=["layer", "head"], how="left").rename(columns={"contribution": "dla"})
    if patch is not None:
        df = df.merge(patch[["layer", "head", "normalised"]].astype({"layer": int, "head": int}),
                      on=["layer", "head"], how="left").rename(columns={"normalised": "patching_normalised"})
    df["selected_by"] = "config" if c.heads is not None else c.select_by
    return df


def _compression_report(comp: QKCompressionResult, frame: pd.DataFrame, fits, heads_df: pd.DataFrame,
                        c: CompressionConfig, out: StepResult) -> None:
    d = comp.d_head
    titles = {"normal": "normal labels (A-D)", "random": "randomised labels, subspace fitted on them",
              "random_with_normal_fit": "randomised labels, subspace fitted on normal labels"}
    lines = []
    for (label, variant), g in frame.groupby(["label", "variant"], sort=False):
        parts = []
        for cond in comp.conditions:
            gc = g[g["condition"] == cond]
            parts.append(f"{cond}: {_fmt_curve(gc, d)} (90% kept from rank {_rank_for(gc, 0.9)})")
        lines.append(f"{label} {variant}: " + "; ".join(parts))
    where = "label tokens" if c.key_positions == "labels" else "all positions"
    out.summary.append(
        f"q/k compression of {', '.join(heads_df['label'])}: share of the letter logit diff kept at each rank "
        f"(q at the last position, k at the {where}, d_head {d}; unablated letter logit diff " + ", ".join(
            f"{cond} {float(comp.baseline_logit_diff[i]):.2f}" for i, cond in enumerate(comp.conditions)) + "):")
    out.summary.extend(f"  {line}" for line in lines)
    out.sections.append(ReportSection("Correct-letter heads", text=(
        f"Compressed: {', '.join(heads_df['label'])}, selected by {heads_df['selected_by'].iloc[0]} "
        "(dla = mean direct logit attribution to the correct letter; patching_normalised = last-position "
        "head patching)."), table=heads_df))
    pivot = frame.pivot_table(index=["condition", "label", "variant"], columns="rank",
                              values="share_logit_diff").reset_index()
    pivot.columns = [str(x) for x in pivot.columns]
    out.sections.append(ReportSection("Low-rank q/k compression of the correct-letter heads", text=(
        "For each head, the pre-rotary query at the last position and its KV group's pre-rotary key at the "
        f"{'four label tokens' if c.key_positions == 'labels' else 'positions'} are replaced by the mean plus "
        "their projection on the top-r right singular vectors (SVD over the data set; r = 0 keeps only the "
        "mean; full rank leaves the model unchanged). Only this head's last-position attention scores see "
        "the compressed key (the other query heads of its GQA group keep theirs). Table: the letter logit "
        "diff (correct minus the mean of the other three letters) as a share of the unablated model's; the "
        "qk_compression table also has accuracy shares and share_of_head_effect = (m_r - m_0) / "
        "(m_full - m_0).\n\n" + " | ".join(lines)), table=pivot, table_max_rows=60))
    for i, cond in enumerate(comp.conditions):
        fig = rank_curves(frame, cond, d, title=f"q/k compression: {titles.get(cond, cond)}")
        out.figures[f"qk_compression_{cond}"] = fig
        text = (f"{titles.get(cond, cond)}: unablated letter logit diff {float(comp.baseline_logit_diff[i]):.3f}, "
                f"accuracy {float(comp.baseline_accuracy[i]):.0%}.")
        out.sections.append(ReportSection(f"Rank vs metric: {titles.get(cond, cond)}", text=text, figure=fig))
    ev = pd.concat([hs.to_frame().assign(fit=f) for f, per in fits.items() for hs in per.values()])
    ev = ev[ev["rank"].isin([r for r in comp.ranks if r <= d])]
    ev_table = ev.pivot_table(index=["fit", "layer", "head", "component"], columns="rank",
                              values="explained_variance").reset_index()
    ev_table.columns = [str(x) for x in ev_table.columns]
    out.sections.append(ReportSection("Explained variance of the q/k subspaces", text=(
        "Share of the centred variance of the fitted activations in the top-r singular directions."),
        table=ev_table, table_max_rows=60))


register_kind("mcq_letters", MCQLettersConfig, dataset_step, accuracy_step, dla, head_patching, compression,
              prepare=prepare, check=check, estimate=estimate, memory=memory)
