"""Experiment kind ``patching`` (the default when a YAML has no `kind:`): IOI prompt pairs or a
user's JSONL pairs; task accuracy, head patching (optionally per position), residual-stream
patching by (layer, position), direct logit attribution and head-pattern scores.

    name: ioi
    data: {source: ioi, n_prompts: 20}          # or {source: jsonl, path: pairs.jsonl}
    analyses: {head_patching: {per_position: true}, head_patterns: {enabled: true}}
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from interp.analyses.accuracy import task_accuracy
from interp.analyses.patching import patch_heads, patch_residual
from interp.data.ioi import IOI_TEMPLATES, generate_ioi
from interp.data.pairs import PairDataset, TokenizedPairs, check_jsonl, load_jsonl, tokenize_pairs
from interp.io import schema
from interp.io.config_errors import yaml_scalar
from interp.io.limits import PROMPT_BYTES, ModelShape, pairs_peak, variants
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.schema import (
    BaseExperimentConfig,
    Enabled,
    FieldError,
    MetricName,
    NonNegativeInt,
    PositiveInt,
    Section,
    resolve_config_path,
    resolve_prepend_bos,
    unique_items,
)
from interp.io.shared_steps import DlaWording, dla_step, head_patching_step, head_patterns_step
from interp.io.step import StepContext, StepResult
from interp.viz.heatmaps import position_heatmap

Component = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
Direction = Literal["denoising", "noising"]
_TEMPLATES = f"integers 0..{len(IOI_TEMPLATES) - 1} (0-14 ABBA, 15-29 BABA)"


def check_template_index(t: int) -> int:
    """`t`, or a ValueError naming the allowed IOI template indices."""
    if not 0 <= t < len(IOI_TEMPLATES):
        raise ValueError(f"template index {t} is out of range; allowed: {_TEMPLATES}")
    return t


class DataConfig(Section):
    source: Literal["ioi", "jsonl"] = "ioi"
    n_prompts: PositiveInt = Field(20, description="an integer >= 1 (ioi only)")
    corruption: Literal["abc", "flip"] = "abc"
    templates: tuple[NonNegativeInt, ...] | None = Field(
        None, description="null (all templates) or a list of template indices >= 0 (ioi only)"
    )
    path: Path | None = Field(None, description="a path to a .jsonl prompt file (jsonl only)")
    position_template: NonNegativeInt = Field(
        0,
        description="a template index >= 0 (ioi only): maps resolved by position (residual "
        "patching, per-position head patching) use prompts of this one template so that "
        "positions line up",
    )
    position_n_prompts: PositiveInt = Field(
        8, description="an integer >= 1 (ioi only): prompts in the position-resolved maps"
    )
    prepend_bos: StrictBool | None = Field(
        None, description="true or false, or null/unset to follow the model (true for gemma3-270m, "
        "which expects <bos> first; false for smollm2-135m)")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        must = "file" if info.data.get("source") == "jsonl" else None
        return resolve_config_path(path, info, must=must, what="data file")

    @field_validator("templates")
    @classmethod
    def _templates(cls, templates: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if templates is not None and not templates:
            raise ValueError("empty list; give at least one template index, or null for all")
        for t in templates or ():
            check_template_index(t)
        return templates

    @field_validator("position_template")
    @classmethod
    def _position_template(cls, t: int) -> int:
        return check_template_index(t)

    @model_validator(mode="after")
    def _fields_match_source(self) -> DataConfig:
        if self.source == "jsonl" and self.path is None:
            raise FieldError("path", "required when data.source is 'jsonl'")
        # A field that the chosen source ignores must stay at its default: silently ignoring
        # `n_prompts: 8` on a jsonl source would hide a mistake.
        only_for = {"ioi": ("path",),
                    "jsonl": ("n_prompts", "corruption", "templates", "position_template", "position_n_prompts")}
        other = "jsonl" if self.source == "ioi" else "ioi"
        for name in only_for[self.source]:
            default = type(self).model_fields[name].default
            if getattr(self, name) != default:
                raise FieldError(name, f"only used when data.source is '{other}' (data.source is "
                                 f"'{self.source}'); remove it or set it to {yaml_scalar(default)}")
        return self


class AccuracyConfig(Enabled):
    pass


class DlaConfig(Enabled):
    pass


class HeadPatternsConfig(Enabled):
    """Previous-token, duplicate-token and induction scores on repeated random tokens (cheap:
    one forward of n_sequences x 2*seq_len tokens); written as `head_scores` for the atlas."""

    enabled: StrictBool = False
    n_sequences: PositiveInt = Field(8, description="an integer >= 1 (random sequences)")
    seq_len: Annotated[StrictInt, Field(ge=2)] = Field(20, description="an integer >= 2 (tokens per half)")


class PatchingConfig(Enabled):
    direction: Direction = "denoising"
    metric: MetricName = "logit_diff"
    batch_size: schema.BatchSizeSetting = Field(
        64, description="an integer >= 1 or 'auto' (max patch variants per forward)")


class HeadPatchingConfig(PatchingConfig):
    per_position: StrictBool = False


class ResidualPatchingConfig(PatchingConfig):
    components: tuple[Component, ...] = Field(
        ("resid_pre", "attn_out", "mlp_out"), min_length=1,
        description="a non-empty list of: resid_pre, resid_mid, resid_post, attn_out, mlp_out",
    )

    @field_validator("components")
    @classmethod
    def _no_duplicates(cls, components: tuple[str, ...]) -> tuple[str, ...]:
        return unique_items(components, "components")


class AnalysesConfig(Section):
    accuracy: AccuracyConfig = AccuracyConfig()
    head_patching: HeadPatchingConfig = HeadPatchingConfig()
    residual_patching: ResidualPatchingConfig = ResidualPatchingConfig()
    dla: DlaConfig = DlaConfig()
    head_patterns: HeadPatternsConfig = HeadPatternsConfig()


class ExperimentConfig(BaseExperimentConfig):
    """The patching experiment (IOI or a user's prompt pairs)."""

    kind: Literal["patching"] = "patching"
    data: DataConfig = DataConfig()
    analyses: AnalysesConfig = AnalysesConfig()




# ------------------------------------------------------------------------------------- data


def load_data(cfg: ExperimentConfig, model, progress=None) -> tuple[PairDataset, TokenizedPairs, TokenizedPairs]:
    """(dataset, its tokenized pairs, the pairs used for maps resolved by position);
    `progress(desc)` (the runner's `bars.new`) opens a bar for each generator."""
    d, tok = cfg.data, model.tokenizer
    bar = progress or (lambda desc: None)
    bos = resolve_prepend_bos(d.prepend_bos, model)  # unset: the model's own prepend_bos
    if d.source == "jsonl":
        ds = load_jsonl(d.path)
        pairs = tokenize_pairs(ds, tok, prepend_bos=bos, source_file=str(d.path))
        return ds, pairs, pairs
    templates = list(d.templates) if d.templates is not None else None
    ds = generate_ioi(d.n_prompts, tok, seed=cfg.seed, corruption=d.corruption, templates=templates,
                      progress=bar("IOI prompts"))
    pos_ds = generate_ioi(d.position_n_prompts, tok, seed=cfg.seed, corruption=d.corruption,
                          templates=[d.position_template], progress=bar("IOI prompts (one template)"))
    return ds, tokenize_pairs(ds, tok, prepend_bos=bos), tokenize_pairs(pos_ds, tok, prepend_bos=bos)


def prepare(cfg: ExperimentConfig, model, log, *, progress=None):
    ds, pairs, pos_pairs = load_data(cfg, model, progress)
    log(f"data: {len(ds)} prompt pairs ({ds.name}); {len(pairs.by_length().batches)} token-length groups")
    return ds, pairs, pos_pairs


def check(cfg: ExperimentConfig, tokenizer) -> list[str]:
    """Validate the prompts with the tokenizer only: every broken JSONL line, or the IOI names."""
    d = cfg.data
    bos = bool(d.prepend_bos) if d.prepend_bos is not None else bool(getattr(tokenizer, "interp_prepend_bos", False))
    if d.source == "jsonl":
        n = check_jsonl(d.path, tokenizer, prepend_bos=bos)
        return [f"data: {n} prompt pairs in {d.path}, all valid"]
    ds = generate_ioi(d.n_prompts, tokenizer, seed=cfg.seed, corruption=d.corruption,
                      templates=list(d.templates) if d.templates is not None else None)
    tokenize_pairs(ds, tokenizer, prepend_bos=bos)
    return [f"data: {len(ds)} IOI prompt pairs ({ds.name}), all valid"]


def _positions(pairs: TokenizedPairs) -> int:
    """Token positions summed over the pairs (each position of each pair is one sweep entry)."""
    return sum(len(b) * b.clean.shape[1] for b in pairs.batches)


def estimate(cfg: ExperimentConfig, model, data) -> dict[str, int]:
    """Forward passes per field to lower: one per patched (pair, layer, head[, position]) or
    (pair, layer, component, position), plus the clean and corrupt baselines. With no model
    and data (before either exists) a lower bound from the config: one layer, one head, one
    position per prompt, the generated prompt counts."""
    a, ioi = cfg.analyses, cfg.data.source == "ioi"
    L, H = (model.spec.n_layers, model.spec.n_heads) if model is not None else (1, 1)
    if data is not None:
        _, pairs, pos_pairs = data
        n, pos = pairs.n, _positions(pos_pairs)
    else:
        n, pos = (cfg.data.n_prompts, cfg.data.position_n_prompts) if ioi else (0, 0)
    costs: Counter[str] = Counter()
    if a.head_patching.enabled:
        costs["data.n_prompts" if ioi else "data.path"] += n * (L * H + 2)
        if a.head_patching.per_position:
            costs["analyses.head_patching.per_position"] += pos * L * H
    if a.residual_patching.enabled:
        costs["data.position_n_prompts" if ioi else "data.path"] += pos * L * len(a.residual_patching.components)
    return dict(costs)


def memory(cfg: ExperimentConfig, shape: ModelShape, data) -> dict[str, int]:
    """Bytes per field to lower: the prompt pairs held for the whole run plus the largest sweep
    chunk (block inputs of a length group at every layer, and one forward of its rows stacked
    once per head of a layer: the engine stacks variants that resume at the same block). With no
    data yet, the generated prompts alone."""
    a, ioi = cfg.analyses, cfg.data.source == "ioi"
    field = "data.n_prompts" if ioi else "data.path"
    if data is None:
        return {field: cfg.data.n_prompts * PROMPT_BYTES if ioi else 0}
    _, pairs, pos_pairs = data
    hp, rp = a.head_patching, a.residual_patching
    main = pairs_peak(shape, pairs, variants(hp.batch_size, shape.n_heads)) if hp.enabled else 0
    blocks = {field: pairs.n * PROMPT_BYTES + main}
    heads_pos = hp.enabled and hp.per_position
    pos = max(pairs_peak(shape, pos_pairs, variants(hp.batch_size, shape.n_heads)) if heads_pos else 0,
              pairs_peak(shape, pos_pairs, variants(rp.batch_size, len(rp.components))) if rp.enabled else 0)
    if pos:
        blocks["data.position_n_prompts" if ioi else "data.path"] = pos + (0 if ioi else blocks[field])
    return blocks


def _flat(ds: PairDataset):
    df = ds.to_frame()
    for c in df.columns:
        if df[c].map(lambda v: isinstance(v, dict | list | tuple)).any():
            df[c] = df[c].map(str)
    return df


# ------------------------------------------------------------------------------------ steps


def dataset_step(ctx: StepContext) -> StepResult:
    ds = ctx.data[0]
    return StepResult(tables={"dataset": _flat(ds)},
                      manifest={"dataset": {"name": ds.name, "n": len(ds), "source": ds.source}})


def accuracy_step(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.accuracy.enabled:
        return None
    ds, pairs, _ = ctx.data
    acc = task_accuracy(ctx.model, pairs, ds)
    s = acc.summary()
    line = (f"accuracy: top-1 = answer on {s['top1_accuracy']:.0%} of {s['n_prompts']} prompts; "
            f"logit diff clean {s['mean_clean_logit_diff']:.2f}, corrupt {s['mean_corrupt_logit_diff']:.2f}; "
            f"logit diff > 0 on {s['logit_diff_positive_rate']:.0%}")
    return StepResult("accuracy", tables={"accuracy": acc.to_frame()}, texts={"accuracy.json": json.dumps(s, indent=2)},
                      summary=[line], sections=[ReportSection("Task accuracy", text=line, table=acc.to_frame(),
                                                              table_max_rows=ctx.cfg.output.top_k)])


def head_patching(ctx: StepContext) -> StepResult | None:
    hp = ctx.cfg.analyses.head_patching
    if not hp.enabled:
        return None
    result, _ = head_patching_step(
        ctx.model, ctx.data[1], hp, ctx.cfg.output.top_k, ctx.progress("head patching"),
        title=f"Head output patching ({hp.direction}, {hp.metric}, normalised)",
        executor=ctx.executor("head_patching"))
    return result


def head_patching_per_position(ctx: StepContext) -> StepResult | None:
    hp = ctx.cfg.analyses.head_patching
    if not (hp.enabled and hp.per_position):
        return None
    rp = patch_heads(ctx.model, ctx.data[2], direction=hp.direction, metric=hp.metric, per_position=True,
                     batch_size=hp.batch_size, progress=ctx.progress("head patching per position"),
                     executor=ctx.executor("head_patching_per_position"))
    return StepResult("head_patching_per_position", tables={"head_patching_per_position": rp.to_frame()},
                      sections=[ReportSection("Head patching per position", table=rp.top(ctx.cfg.output.top_k))])


def residual_patching(ctx: StepContext) -> StepResult | None:
    c = ctx.cfg.analyses.residual_patching
    if not c.enabled:
        return None
    res = patch_residual(ctx.model, ctx.data[2], components=c.components, direction=c.direction, metric=c.metric,
                         batch_size=c.batch_size, progress=ctx.progress("residual patching"),
                         executor=ctx.executor("residual_patching"))
    df = res.to_frame()
    fig = position_heatmap(df, "normalised", token_labels=res.token_labels,
                           title=f"Residual patching per (layer, position) ({c.direction}, normalised)")
    return StepResult("residual_patching", tables={"residual_patching": df}, figures={"residual_patching": fig},
                      sections=[ReportSection(
                          "Residual stream, attention and MLP patching",
                          text=f"{res.n_prompts} prompts of one template: {''.join(res.token_labels or [])!r}",
                          figure=fig, table=res.top(ctx.cfg.output.top_k))])


_DLA = DlaWording(text=lambda dla: (
    "Contributions to logit(answer) - logit(distractor) at the last position; they sum to the model's value "
    f"within {dla.max_abs_error:.2e}. Assumed: {'; '.join(dla.approximations)}."))


def dla(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.dla.enabled:
        return None
    return dla_step(ctx.model, ctx.data[1], ctx.cfg.output.top_k, _DLA)[0]


def head_patterns(ctx: StepContext) -> StepResult | None:
    hp = ctx.cfg.analyses.head_patterns
    if not hp.enabled:
        return None
    return head_patterns_step(ctx.model, hp.n_sequences, hp.seq_len, ctx.cfg.seed, ctx.cfg.output.top_k)


register_kind("patching", ExperimentConfig, dataset_step, accuracy_step, head_patching, head_patching_per_position,
              residual_patching, dla, head_patterns, prepare=prepare, check=check, estimate=estimate,
              memory=memory)
