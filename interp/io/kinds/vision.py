"""Experiment kind ``vision_heads``: vision-aware heads and hallucination in a LLaVA model.

Reproduces He et al., "Cracking the Code of Hallucination in LVLMs with Vision-aware Head
Divergence" (arXiv 2412.13949) on ``shapes-llava`` (DINOv2 + projector + SmolLM2, built here):
VHD head maps at the first generated token and over all tokens, T-VHD of hallucinated vs
correct attribute tokens, and VHR (reinforce the vision-aware heads by alpha) against a random-
head control with the same number of heads per layer, scored CHAIR-style (attribute words not in
the image) and by answer accuracy. The data are the prior-contradicting probe (a blue banana,
a purple sun, ...: colour questions, optionally captions) plus ordinary shapes questions.

    kind: vision_heads
    name: vision_heads
    model: {name: shapes-llava}
    data: {n_probe: 40, probe_captions: true, n_shapes: 24}
    analyses: {vhd: {top_k: 3}, vhr: {alphas: [1.1, 1.25, 1.5, 2.0], layers: null, random_seeds: [0, 1]}}

Registered on import (`interp.io.registry.load_kinds` imports every module of this package).
"""

from __future__ import annotations

import time
from typing import Annotated, ClassVar, Literal

import pandas as pd
from pydantic import Field, StrictBool, StrictStr, field_validator

from interp.analyses.hallucination import attribute_spans, score_answers, summarise
from interp.analyses.vhd import head_divergence, label_tokens, paper_layers, reinforce_heads
from interp.core.capabilities import Generates, ImageInput, has
from interp.core.errors import ConfigError
from interp.data.shapes import QTYPES, ShapeItem, generate_prior_probe, generate_shapes
from interp.io.limits import attribute
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.schema import (
    BaseExperimentConfig,
    ModelConfig,
    NonNegativeInt,
    PositiveInt,
    Section,
    Unique,
    unique_items,
)
from interp.io.step import StepContext, StepResult
from interp.viz.heatmaps import head_heatmap
from interp.viz.vision import alpha_curves, tvhd_box

PositiveFloat = Annotated[float, Field(gt=0.0)]


class VisionModelConfig(ModelConfig):
    modality: ClassVar[str | None] = "vision"
    modality_label: ClassVar[str] = "vision-language (LLaVA)"
    models_label: ClassVar[str] = "vision-language models"
    allowed: ClassVar[str] = "shapes-llava, a llava-hf/... hub id or a local LLaVA directory"

    name: StrictStr = Field("shapes-llava", description="a LLaVA model: shapes-llava, a llava-hf/... hub id "
                                                        "or a local LLaVA directory")


class VisionDataConfig(Section):
    n_probe: NonNegativeInt = Field(40, description="an integer >= 0: prior-contradicting colour questions "
                                                    "(a blue banana, a purple sun, ...)")
    probe_captions: StrictBool = Field(True, description="true or false: also ask for a caption of each probe image")
    n_shapes: NonNegativeInt = Field(24, description="an integer >= 0: ordinary held-out shapes questions")
    qtypes: tuple[Literal["colour", "shape", "position", "count", "caption"], ...] = Field(
        QTYPES, description=f"a non-empty list of: {', '.join(QTYPES)}")

    @field_validator("qtypes")
    @classmethod
    def _qtypes(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError(f"must not be empty; give some of: {', '.join(QTYPES)}")
        return unique_items(value, "question types")


class VHDConfig(Section):
    enabled: StrictBool = True
    top_k: PositiveInt = Field(3, description="an integer >= 1: heads per layer summed in T-VHD")
    n_heads_report: PositiveInt = Field(10, description="an integer >= 1: vision-aware heads listed")


class VHRConfig(Section):
    enabled: StrictBool = True
    alphas: tuple[PositiveFloat, ...] = Field(
        (1.1, 1.25, 1.5, 2.0), description="a non-empty list of numbers > 0: the factors on the selected heads' "
        "outputs (one VHR run and its random controls per value)")
    layers: tuple[NonNegativeInt, ...] | None = Field(
        None, description="null (layer 1 and the last 14 layers, as the reference) or a list of layer indices")
    random_seeds: Annotated[tuple[NonNegativeInt, ...], Unique("random seeds")] = Field(
        (0,), description="a list of integers >= 0: one random-head control per seed (empty: no control)")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: tuple | None) -> tuple | None:
        if value is not None and not value:
            raise ValueError("empty list; give layer indices, or null for the reference's layers")
        return None if value is None else unique_items(value, "layers")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError("must not be empty; give at least one factor, e.g. [2.0]")
        return unique_items(value, "alphas")



class VisionAnalysesConfig(Section):
    max_new_tokens: PositiveInt = Field(8, description="an integer >= 1: greedy tokens per answer")
    batch_size: PositiveInt = Field(8, description="an integer >= 1: questions per forward")
    vhd: VHDConfig = VHDConfig()
    vhr: VHRConfig = VHRConfig()


class VisionHeadsConfig(BaseExperimentConfig):
    kind: Literal["vision_heads"] = "vision_heads"
    model: VisionModelConfig = VisionModelConfig()
    data: VisionDataConfig = VisionDataConfig()
    analyses: VisionAnalysesConfig = VisionAnalysesConfig()


# ------------------------------------------------------------------------------------ runner


def prepare(cfg: VisionHeadsConfig, model, log, *, progress=None) -> list[tuple[str, ShapeItem]]:
    if not (has(model, ImageInput) and has(model, Generates)):
        raise ConfigError(f"{model.name} is not a vision-language model", path="model.name")
    d, size = cfg.data, model.spec.image_size
    items: list[tuple[str, ShapeItem]] = []
    if d.n_probe:
        items += [("probe", it) for it in generate_prior_probe(
            d.n_probe, cfg.seed, image_size=size, captions=d.probe_captions,
            progress=progress("probe images") if progress else None).items]
    if d.n_shapes:
        items += [("shapes", it) for it in generate_shapes(
            d.n_shapes, cfg.seed + 1, image_size=size, qtypes=d.qtypes,
            progress=progress("shapes images") if progress else None).items]
    if not items:
        raise ConfigError("no questions: set data.n_probe or data.n_shapes above 0", path="data")
    layers = cfg.analyses.vhr.layers or ()
    for i, layer in enumerate(layers):
        if layer >= model.spec.n_layers:
            raise ConfigError(f"layer {layer} does not exist in {model.name} (layers 0..{model.spec.n_layers - 1})",
                              path=f"analyses.vhr.layers[{i}]")
    log(f"data: {sum(s == 'probe' for s, _ in items)} probe items, {sum(s == 'shapes' for s, _ in items)} shapes items")
    return items


def estimate(cfg: VisionHeadsConfig, model, items) -> dict[str, int]:
    """Forward passes per field to lower: one per generated token of every question, with image
    and text-only rows for VHD, and once per VHR condition (each alpha, and each random-head
    seed per alpha). The question count goes to data.n_probe or data.n_shapes (the larger), the
    per-question cost to the larger of analyses.max_new_tokens and analyses.vhr.alphas."""
    d, a = cfg.data, cfg.analyses
    n_probe = d.n_probe * (2 if d.probe_captions else 1)
    n = len(items) if items is not None else n_probe + d.n_shapes
    conditions = len(a.vhr.alphas) * (1 + len(a.vhr.random_seeds)) if a.vhr.enabled else 0
    per = a.max_new_tokens * (2 + conditions)
    setting = "analyses.max_new_tokens" if a.max_new_tokens >= 2 + conditions else "analyses.vhr.alphas"
    costs: dict[str, int] = {}
    attribute(costs, n, per, "data.n_probe" if n_probe >= d.n_shapes else "data.n_shapes", setting)
    return costs


def _fmt_heads(df: pd.DataFrame, value: str) -> str:
    return ", ".join(f"L{int(r.layer)}H{int(r.head)} ({getattr(r, value):.2f})" for r in df.itertuples())


def dataset_step(ctx: StepContext) -> StepResult:
    items = ctx.data
    return StepResult(manifest={"task": "vision_heads", "dataset": {"name": "shapes", "n": len(items)}}, tables={
        "dataset": pd.DataFrame([{"item": i, "set": s, "qtype": it.qtype, "question": it.question, "truth": it.answer,
                                  "prior": it.prior, "caption": it.scene.caption()}
                                 for i, (s, it) in enumerate(items)])})


def _inputs(ctx: StepContext) -> tuple[list, list]:
    return [it.image for _, it in ctx.data], [it.question for _, it in ctx.data]


def divergence_step(ctx: StepContext) -> None:
    """Greedy answers with VHD read on the way (no tables yet: `vhd` and `hallucination` write them)."""
    a, items = ctx.cfg.analyses, ctx.data
    ctx.state["t0"] = time.perf_counter()
    ctx.log(f"VHD: greedy answers to {len(items)} questions, image and text-only rows side by side")
    images, questions = _inputs(ctx)
    res = ctx.state["vhd"] = head_divergence(ctx.model, images, questions, max_new_tokens=a.max_new_tokens,
                                             batch_size=a.batch_size,
                                             progress=ctx.progress("VHD (greedy, image and text-only rows)"))
    ctx.state["conditions"] = [score_answers(res.texts, items, "baseline")]
    ctx.state["meta"] = {"baseline": ("baseline", 1.0, None)}


def vhd_step(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.vhd.enabled:
        return None
    return _vhd_sections(ctx.cfg, ctx.state["vhd"], ctx.data)


def _reinforce(ctx: StepContext, alpha: float, layers: list[int], **kw):
    a = ctx.cfg.analyses
    images, questions = _inputs(ctx)
    return reinforce_heads(ctx.model, images, questions, alpha=alpha, layers=layers, max_new_tokens=a.max_new_tokens,
                           batch_size=a.batch_size, **kw)


def vhr_step(ctx: StepContext) -> StepResult | None:
    a, items, t0 = ctx.cfg.analyses, ctx.data, ctx.state["t0"]
    if not a.vhr.enabled:
        return None
    layers = list(a.vhr.layers) if a.vhr.layers else paper_layers(ctx.model.spec.n_layers)
    conditions, meta, sels = ctx.state["conditions"], ctx.state["meta"], []
    for alpha in a.vhr.alphas:
        ctx.log(f"VHR (alpha {alpha}, {len(layers)} layers) [{time.perf_counter() - t0:.0f} s]")
        vhr = _reinforce(ctx, alpha, layers, progress=ctx.progress(f"VHR alpha {alpha}"))
        conditions.append(score_answers(vhr.texts, items, f"vhr a={alpha}"))
        meta[f"vhr a={alpha}"] = ("vhr", alpha, None)
        sels.append(vhr.selection_frame().assign(alpha=alpha))
        for seed in a.vhr.random_seeds:
            ctx.log(f"random-head control, alpha {alpha}, seed {seed} [{time.perf_counter() - t0:.0f} s]")
            ctl = _reinforce(ctx, alpha, layers, control_counts=vhr.counts(), seed=seed,
                             progress=ctx.progress(f"random heads alpha {alpha} seed {seed}"))
            conditions.append(score_answers(ctl.texts, items, f"random a={alpha} seed={seed}"))
            meta[f"random a={alpha} seed={seed}"] = ("random", alpha, seed)
    return _vhr_sections(pd.concat(sels, ignore_index=True), conditions, meta, layers)


def hallucination_step(ctx: StepContext) -> StepResult:
    scores = ctx.state["scores"] = pd.concat(ctx.state["conditions"], ignore_index=True)
    summary = summarise(scores)
    b = summary[(summary.condition == "baseline") & (summary.set == "all")].iloc[0]
    return StepResult("hallucination", tables={"answers": scores, "hallucination": summary}, lead=True, summary=[
        f"baseline over {int(b.n)} answers: accuracy {b.accuracy:.1%}, CHAIR_i {b.chair_i:.1%}, "
        f"CHAIR_s {b.chair_s:.1%}, probe answers naming the prior colour {b.prior_rate:.1%}"],
        sections=[ReportSection("Answers and hallucination", text=(
            "accuracy: the answer names the true attribute(s) and no attribute absent from the image; CHAIR_i: "
            "share of mentioned attribute words (colours, shapes, counts, positions) not in the image; CHAIR_s: "
            "share of answers with at least one; prior_rate: probe answers naming the colour the object's name "
            "suggests (yellow for a banana) although the image shows another."), table=summary)])


def examples_step(ctx: StepContext) -> StepResult:
    scores = ctx.state["scores"]
    return StepResult(sections=[ReportSection("Example answers", table=scores[scores.condition == "baseline"][
        ["set", "question", "truth", "text", "correct", "hallucinated"]], table_max_rows=20)])


def _vhd_sections(cfg: VisionHeadsConfig, res, items) -> StepResult:
    k = cfg.analyses.vhd
    out = StepResult("vhd", tables={"vhd": res.to_frame()})
    first, every = res.head_map("first"), res.head_map("all")
    out.tables["head_scores"] = (pd.concat([
        first.assign(score="vhd.shapes.first_token", value=first["vhd"]),
        every.assign(score="vhd.shapes.all_tokens", value=every["vhd"])])[["layer", "head", "score", "value"]])
    fig1 = head_heatmap(first, "vhd", title="VHD per head at the first generated token (mean over questions)")
    fig2 = head_heatmap(every, "vhd", title="VHD per head over all generated tokens")
    out.figures.update(vhd_first_token=fig1, vhd_all_tokens=fig2)
    top = first.sort_values("vhd", ascending=False).head(k.n_heads_report)
    z = ((first["vhd"] - first.groupby("layer")["vhd"].transform("mean"))
         / first.groupby("layer")["vhd"].transform("std"))
    zt = first.assign(z_in_layer=z).sort_values("z_in_layer", ascending=False).head(k.n_heads_report)
    by_layer = first.groupby("layer")["vhd"].mean()
    out.summary.append(f"vision-aware heads (largest mean first-token VHD): {_fmt_heads(top, 'vhd')}; "
                       f"largest within their layer (z-score): {_fmt_heads(zt, 'z_in_layer')}; mean VHD per layer "
                       f"rises from {by_layer.iloc[0]:.2f} (layer 0) to {by_layer.max():.2f} "
                       f"(layer {by_layer.idxmax()})")
    out.sections.append(ReportSection("Vision-aware heads (VHD)", text=(
        "VHD[l,i] = ||A[l,i](image + question) - A[l,i](question, image tokens removed)||, A = the head's "
        f"output before W_O at the position predicting the token; mean over {len(res.texts)} questions. "
        f"Top heads: {_fmt_heads(top, 'vhd')}. Within-layer outliers (VHD z-score in its layer): "
        f"{_fmt_heads(zt, 'z_in_layer')}."), figure=fig1, table=top))
    out.sections.append(ReportSection("VHD over all generated tokens", figure=fig2))

    tokens = res.token_frame(k.top_k)
    tokens["label"] = label_tokens(tokens, attribute_spans(res.texts, items))
    # T-VHD drifts with the position in the answer; centring per step compares like with like
    tokens["tvhd_step_centred"] = tokens["tvhd"] - tokens.groupby("step")["tvhd"].transform("mean")
    out.tables["tvhd_tokens"] = tokens
    stats = tokens.groupby("label")["tvhd"].agg(["count", "mean", "median", "std"]).reset_index()
    stats["mean_step_centred"] = stats["label"].map(tokens.groupby("label")["tvhd_step_centred"].mean())
    stats["mean_step"] = stats["label"].map(tokens.groupby("label")["step"].mean())
    hal, cor = tokens[tokens.label == "hallucinated"], tokens[tokens.label == "correct"]
    if len(hal) and len(cor):
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(hal["tvhd"], cor["tvhd"], alternative="less").pvalue)
        pc = float(mannwhitneyu(hal["tvhd_step_centred"], cor["tvhd_step_centred"], alternative="less").pvalue)
        line = (f"T-VHD (top-{k.top_k} per layer, summed): hallucinated attribute tokens {hal.tvhd.mean():.2f} "
                f"(n={len(hal)}) vs correct {cor.tvhd.mean():.2f} (n={len(cor)}); hallucinated lower: "
                f"{'yes' if hal.tvhd.mean() < cor.tvhd.mean() else 'no'} (one-sided Mann-Whitney p={p:.3g}); "
                f"centred per answer position: {hal.tvhd_step_centred.mean():+.2f} "
                f"vs {cor.tvhd_step_centred.mean():+.2f} "
                f"(p={pc:.3g})")
    else:
        line = (f"T-VHD: {len(hal)} hallucinated and {len(cor)} correct attribute tokens; "
                "no comparison possible without both")
    out.summary.append(line)
    fig = out.figures["tvhd"] = tvhd_box(tokens, title="T-VHD of generated tokens by label")
    out.sections.append(ReportSection("T-VHD of hallucinated vs correct tokens", text=(
        line + ". Labels: a token inside an attribute word that is in the image (correct) or not "
        "(hallucinated); other tokens are function words. mean_step: where in the answer the tokens sit."),
        figure=fig, table=stats))
    return out


def _with_meta(table: pd.DataFrame, meta: dict[str, tuple]) -> pd.DataFrame:
    cols = pd.DataFrame([(c, *meta[c]) for c in table["condition"]], columns=["condition", "method", "alpha", "seed"])
    return pd.concat([table.reset_index(drop=True), cols.drop(columns="condition")], axis=1)


def _vhr_sections(sel: pd.DataFrame, conditions: list[pd.DataFrame], meta: dict[str, tuple],
                  layers) -> StepResult:
    table = _with_meta(summarise(pd.concat(conditions, ignore_index=True)), meta)
    out = StepResult("vhr", tables={"vhr_heads": sel, "vhr_effect": table})
    allset = table[table.set == "all"]
    base = allset[allset.method == "baseline"].iloc[0]
    n_items = max(1, int(base.n))
    n_sel = sel.groupby(["alpha", "item"]).size().mean() if len(sel) else 0.0
    lines = [f"VHR on layers {', '.join(map(str, layers))} ({n_sel:.1f} heads per answer; baseline accuracy "
             f"{base.accuracy:.1%}, CHAIR_i {base.chair_i:.1%}, CHAIR_s {base.chair_s:.1%}, "
             f"prior rate {base.prior_rate:.1%}):"]
    for alpha, g in allset[allset.method != "baseline"].groupby("alpha"):
        v, r = g[g.method == "vhr"].iloc[0], g[g.method == "random"]
        line = (f"  alpha {alpha}: VHR accuracy {v.accuracy:.1%}, CHAIR_i {v.chair_i:.1%}, CHAIR_s {v.chair_s:.1%}, "
                f"prior rate {v.prior_rate:.1%}")
        if len(r):
            line += (f" | random heads ({len(r)} seeds, mean [min-max]): accuracy {r.accuracy.mean():.1%} "
                     f"[{r.accuracy.min():.1%}-{r.accuracy.max():.1%}], CHAIR_i {r.chair_i.mean():.1%} "
                     f"[{r.chair_i.min():.1%}-{r.chair_i.max():.1%}], CHAIR_s {r.chair_s.mean():.1%}, "
                     f"prior rate {r.prior_rate.mean():.1%}")
        lines.append(line)
    out.summary.extend(lines)
    first = sel[sel.alpha == sel.alpha.min()] if len(sel) else sel
    freq = first.groupby(["layer", "head"]).size().sort_values(ascending=False).head(8) / n_items
    fig = alpha_curves(allset, title="Baseline vs VHR vs random heads, by alpha")
    out.figures["vhr"] = fig
    out.sections.append(ReportSection("VHR vs random heads", text=(
        " ".join(lines) + f". One answer changes a rate by {1 / n_items:.1%}. Most often selected heads at "
        f"alpha {sel.alpha.min() if len(sel) else '-'} (share of answers): " +
        ", ".join(f"L{la}H{h} ({f:.0%})" for (la, h), f in freq.items())), figure=fig, table=table,
        table_max_rows=60))
    return out


register_kind("vision_heads", VisionHeadsConfig, dataset_step, divergence_step, vhd_step, vhr_step,
              hallucination_step, examples_step, prepare=prepare, estimate=estimate)
