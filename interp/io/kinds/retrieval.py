"""Experiment kind ``retrieval_heads``: retrieval heads on needle-in-a-haystack prompts and the
causal test of masking them (Wu et al. 2024, arXiv 2404.15574).

Steps: build the needle trials (context lengths x depths x needles), score every head while
the model answers (greedy, the reference procedure; or teacher-forced on the needle sentence),
keep the trials it answers correctly, call heads with mean score > threshold retrieval heads;
then mask the top-K of them and K matched random non-retrieval heads (several seeds) with each
ablation type and compare needle accuracy.

    kind: retrieval_heads
    name: retrieval_heads
    data: {lengths: [500, 1000, 2000], depths: [0.2, 0.5, 0.8], n_needles: 4}
    masking: {k: 10, modes: [uniform, zero, mean], seeds: [0, 1, 2], lengths: [400]}

Registered on import (`interp.io.registry.load_kinds` imports every module of this package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, StrictBool, field_validator

from interp.analyses.ablation import ABLATION_MODES, head_means
from interp.analyses.retrieval import RETRIEVAL_THRESHOLD, retrieval_scores
from interp.analyses.retrieval_masking import masking_test
from interp.core.errors import ConfigError
from interp.data.needles import (
    HAYSTACK_DIR,
    NeedleTrial,
    build_trials,
    load_haystack,
    load_needles,
    needle_target,
)
from interp.io.limits import ModelShape, prefill_bytes
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.schema import (
    BaseExperimentConfig,
    ChatSetting,
    ConfigPath,
    NonNegativeInt,
    PositiveInt,
    Section,
    Unique,
)
from interp.io.step import StepContext, StepResult
from interp.viz.heatmaps import head_heatmap
from interp.viz.retrieval import masking_figure, trial_grid

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class NeedleDataConfig(Section):
    needles: Annotated[Path | None, ConfigPath("needles file")] = Field(
        None, description="null (the bundled data/haystack/needles.jsonl) or a JSONL path")
    haystack: Annotated[Path | None, ConfigPath("haystack directory", "dir")] = Field(
        None, description="null (the bundled data/haystack prose) or a directory of *.txt")
    n_needles: PositiveInt | None = Field(None, description="null (all needles) or an integer >= 1 (the first n)")
    lengths: Annotated[tuple[PositiveInt, ...], Unique()] = Field(
        (500, 1000, 2000), min_length=1,
        description="a non-empty list of haystack lengths in tokens (>= 1; long contexts want a GPU)")
    depths: Annotated[tuple[Fraction, ...], Unique()] = Field(
        (0.2, 0.5, 0.8), min_length=1, description="a non-empty list of needle depths in [0, 1]")
    chat: ChatSetting = None
    max_new_tokens: PositiveInt = Field(32, description="an integer >= 1 (greedy answer length cap)")
    chunk_size: PositiveInt = Field(512, description="an integer >= 1 (prefill chunk, tokens)")

    @property
    def source(self) -> str:
        return (f"needle-in-a-haystack ({len(self.lengths)} lengths x {len(self.depths)} depths x "
                f"{self.n_needles or 'all'} needles)")



class DetectionConfig(Section):
    scorer: Literal["greedy", "teacher_forced"] = Field(
        "greedy",
        description="'greedy' (the reference: score while decoding) or 'teacher_forced' (force the needle sentence)")
    threshold: Annotated[float, Field(ge=0.0)] = Field(
        RETRIEVAL_THRESHOLD, description="a number >= 0 (retrieval head: score > threshold)")
    query_chunk: PositiveInt = Field(64, description="an integer >= 1 (teacher-forced answer rows per forward)")


class MaskingConfig(Section):
    enabled: StrictBool = True
    k: int | str = Field(
        10, description="an integer >= 1 (the top-k heads by score) or 'retrieval' (every head above the threshold)")
    modes: Annotated[tuple[Literal["uniform", "zero", "mean"], ...], Unique()] = Field(
        ("uniform", "zero", "mean"), min_length=1, description=f"a non-empty list of: {', '.join(ABLATION_MODES)}")
    seeds: Annotated[tuple[NonNegativeInt, ...], Unique()] = Field(
        (0, 1, 2), min_length=1, description="a non-empty list of integers >= 0")
    n_needles: PositiveInt | None = Field(
        None, description="null (data.n_needles) or an integer >= 1 (the first n needles)")
    lengths: tuple[PositiveInt, ...] | None = Field(
        None, description="null (the detection lengths) or a list of lengths")
    depths: tuple[Fraction, ...] | None = Field(None, description="null (the detection depths) or a list of depths")

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, k: object) -> int | str:
        if k == "retrieval" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            return k  # type: ignore[return-value]
        raise ValueError(f"got {k!r}; allowed: an integer >= 1 (the top-k heads by score) or 'retrieval' "
                         "(every head above the threshold)")


class RetrievalHeadsConfig(BaseExperimentConfig):
    kind: Literal["retrieval_heads"] = "retrieval_heads"
    data: NeedleDataConfig = NeedleDataConfig()
    detection: DetectionConfig = DetectionConfig()
    masking: MaskingConfig = MaskingConfig()


# ------------------------------------------------------------------------------------ runner


def _trials(cfg: RetrievalHeadsConfig, model, lengths, depths, n_needles, progress=None) -> list[NeedleTrial]:
    d = cfg.data
    needles = load_needles(d.needles)
    if n_needles is not None:
        needles = needles[:n_needles]
    return build_trials(model.tokenizer, needles, list(lengths), list(depths), chat=d.chat,
                        haystack=load_haystack(d.haystack) if d.haystack else None, progress=progress)


def check(cfg: RetrievalHeadsConfig, tokenizer) -> list[str]:
    """The needles file and the haystack prose (no model needed)."""
    needles = load_needles(cfg.data.needles)
    if cfg.data.haystack:
        load_haystack(cfg.data.haystack)
    return [f"data: {len(needles)} needles, haystack {cfg.data.haystack or HAYSTACK_DIR}"]


def estimate(cfg: RetrievalHeadsConfig, model, data) -> dict[str, int]:
    """Forward passes per field to lower: one prefill chunk per `chunk_size` tokens plus one
    decoding step per answer token, for every detection trial and every masking condition. With
    no trials yet, a lower bound from the config (one needle where the count is open)."""
    d, m = cfg.data, cfg.masking

    def per_trial(trials) -> int:
        return sum(-(-t.n_tokens // d.chunk_size) + d.max_new_tokens for t in trials)

    def bound(lengths, depths, n_needles) -> int:
        return sum(-(-n // d.chunk_size) + d.max_new_tokens for n in lengths) * len(depths) * (n_needles or 1)

    if data is not None:
        detect, mask = per_trial(data[0]), per_trial(data[1])
    else:
        detect = bound(d.lengths, d.depths, d.n_needles)
        mask = bound(m.lengths or d.lengths, m.depths or d.depths, m.n_needles or d.n_needles)
    costs = {"data.lengths": detect}
    if m.enabled:
        costs["masking.seeds"] = mask * len(m.modes) * (1 + len(m.seeds))
    return costs


def memory(cfg: RetrievalHeadsConfig, shape: ModelShape, data) -> dict[str, int]:
    """Bytes for `data.lengths`: the longest trial prefilled in chunks (its key/value cache at
    every layer and one chunk attending to it). With no trials yet, the longest configured
    context length."""
    d, m = cfg.data, cfg.masking
    if data is not None:
        longest = max((t.n_tokens for trials in data for t in trials), default=0)
    else:
        longest = max([*d.lengths, *(m.lengths or ())])
    return {"data.lengths": prefill_bytes(shape, longest + d.max_new_tokens, d.chunk_size)}


def prepare(cfg: RetrievalHeadsConfig, model, log, *, progress=None):
    d, m = cfg.data, cfg.masking
    bar = progress or (lambda desc: None)
    detect = _trials(cfg, model, d.lengths, d.depths, d.n_needles, bar("needle trials (detection)"))
    mask = (_trials(cfg, model, m.lengths or d.lengths, m.depths or d.depths, m.n_needles or d.n_needles,
                    bar("needle trials (masking)")) if m.enabled else [])
    log(f"needle trials: {len(detect)} for detection (prompts of {min(t.n_tokens for t in detect)}-"
        f"{max(t.n_tokens for t in detect)} tokens); {len(mask)} for the masking test")
    if m.enabled and isinstance(m.k, int) and m.k > model.spec.n_layers * model.spec.n_heads // 2:
        raise ConfigError(f"k = {m.k} heads is more than half of {model.name}'s "
                          f"{model.spec.n_layers * model.spec.n_heads} heads; no matched random control is left",
                          path="masking.k")
    return detect, mask


def detect(ctx: StepContext) -> StepResult:
    cfg, model, trials = ctx.cfg, ctx.model, ctx.data[0]
    d, det = cfg.data, cfg.detection
    prog = ctx.progress("retrieval scores")
    targets = [needle_target(model.tokenizer, t) for t in trials] if det.scorer == "teacher_forced" else None
    res = retrieval_scores(model, trials, scorer=det.scorer, targets=targets, max_new_tokens=d.max_new_tokens,
                           chunk_size=d.chunk_size, query_chunk=det.query_chunk, progress=prog)
    ctx.state["scores"] = res
    frame = res.to_frame()
    out = StepResult("retrieval_scores", tables={
        "retrieval_scores": frame, "retrieval_trials": res.trials,
        "head_scores": frame.assign(score="retrieval.niah", value=frame["score"])[["layer", "head", "score", "value"]]})
    heads = res.retrieval_heads(det.threshold)
    n_all = model.spec.n_layers * model.spec.n_heads
    fig = head_heatmap(frame, "score", title=f"Retrieval score per head ({det.scorer}, {res.n_kept} kept trials)")
    acc = res.trials["kept"].mean()
    grid = trial_grid(res.trials.assign(correct=res.trials["kept"].astype(float)), "correct",
                      "Needle accuracy of the unmasked model (detection trials)")
    out.figures.update(retrieval_scores=fig, niah_accuracy=grid)
    top = frame.sort_values("score", ascending=False).head(max(cfg.output.top_k, len(heads)))
    named = ", ".join(f"L{a}H{b} ({float(res.scores[a, b]):.2f})" for a, b in heads) or "none"
    out.summary.append(f"needle accuracy (unmasked): {acc:.0%} of {len(res.trials)} trials "
                       f"({res.n_kept} kept for scoring)")
    out.summary.append(f"retrieval heads (score > {det.threshold}): {len(heads)} of {n_all} heads "
                       f"({len(heads) / n_all:.1%}): {named}")
    out.sections.append(ReportSection("Needle-in-a-haystack accuracy", text=(
        f"{len(res.trials)} trials: lengths {list(d.lengths)} tokens of haystack x depths {list(d.depths)} x "
        f"{res.trials['needle_index'].nunique()} needles; greedy answer, correct when ROUGE-1 recall of the "
        f"answer is > 0.5 (the reference's rule). Accuracy {acc:.0%}."), figure=grid,
        table=res.trials.groupby("context_length")[["kept", "recall"]].mean().reset_index()))
    out.sections.append(ReportSection("Retrieval heads", text=(
        f"Scorer: {det.scorer}. At each answer step, a head copies when its argmax key lies in the needle's "
        "answer span and holds the token just produced (adds 1 / span length); a head's score is its mean "
        f"over the {res.n_kept} correctly answered trials. {len(heads)} of {n_all} query heads "
        f"({len(heads) / n_all:.1%}) score > {det.threshold}: {named}."), figure=fig, table=top))
    return out


def mask(ctx: StepContext) -> StepResult | None:
    cfg, model, trials, res = ctx.cfg, ctx.model, ctx.data[1], ctx.state["scores"]
    m, d = cfg.masking, cfg.data
    if not m.enabled:
        return None
    retrieval = res.retrieval_heads(cfg.detection.threshold)
    chosen = retrieval if m.k == "retrieval" else res.ranked()[: m.k]
    why = ("no detection trial was answered correctly, so there are no retrieval scores" if res.n_kept == 0 else
           "no head scored above the threshold" if not chosen else None)
    if why:
        return StepResult(summary=[f"masking test skipped: {why}"],
                          sections=[ReportSection("Masking test", text=f"Skipped: {why}.")])
    means = None
    if "mean" in m.modes:
        ctx.log("head means for mean ablation over the masking trials' prompts")
        means = head_means(model, (torch.tensor([t.prompt_ids]) for t in trials))
    mres = masking_test(model, trials, chosen, exclude=set(retrieval), modes=m.modes, seeds=m.seeds, means=means,
                        max_new_tokens=d.max_new_tokens, chunk_size=d.chunk_size, progress=ctx.progress("masking test"))
    summary = mres.summary()
    fig = masking_figure(mres)
    out = StepResult("masking", tables={"masking": mres.conditions, "masking_trials": mres.trials,
                                        "masking_summary": summary}, figures={"masking": fig})
    lines = [f"{r.mode}: unmasked {r.unmasked:.0%}, top-{r.k} retrieval heads masked {r.retrieval_masked:.0%}, "
             f"{r.k} random heads {r.random_mean:.0%} +- {r.random_std:.0%} (min {r.random_min:.0%}, max "
             f"{r.random_max:.0%}, {r.n_seeds} seeds); retrieval masking "
             f"{'below' if r.below_all_random else 'NOT below'} every random draw" for r in summary.itertuples()]
    out.summary.append(f"masking test on {len(trials)} trials: " + "; ".join(lines))
    out.sections.append(ReportSection("Masking test", text=(
        f"Masked heads: {', '.join(f'L{a}H{b}' for a, b in chosen)} (top {len(chosen)} by retrieval score). "
        "Control: for each seed, one random non-retrieval head per masked head from the same layer (or the "
        "nearest layer with one left). Ablations: uniform = zero query, so the head attends uniformly (the "
        "reference's masking); zero = the head's output set to 0; mean = its mean output over the trials' "
        f"prompts. {len(trials)} trials per condition. " + " ".join(lines)), figure=fig, table=summary))
    return out


def dataset_step(ctx: StepContext) -> StepResult:
    d = ctx.cfg.data
    return StepResult(manifest={"task": "niah", "dataset": {
        "name": "niah", "n": len(ctx.data[0]),
        "source": {"needles": str(d.needles or HAYSTACK_DIR / "needles.jsonl"),
                   "haystack": str(d.haystack or HAYSTACK_DIR),
                   "lengths": list(d.lengths), "depths": list(d.depths), "chat": d.chat}}})


register_kind("retrieval_heads", RetrievalHeadsConfig, dataset_step, detect, mask,
              prepare=prepare, check=check, estimate=estimate, memory=memory)
