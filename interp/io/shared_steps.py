"""Steps that more than one experiment kind runs, written once: direct logit attribution, head
patching (all positions or the last one) and head-pattern scores. Each returns a `StepResult`
(tables, figures, summary, report section) and writes nothing; the kinds wrap them in their
own steps with their wording (`interp/io/kinds/patching.py`, `mcq.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from interp.analyses.dla import direct_logit_attribution
from interp.analyses.head_patterns import head_pattern_scores
from interp.analyses.mcq import patch_heads_last_position
from interp.analyses.patching import patch_heads
from interp.analyses.results import DLAResult
from interp.data.pairs import TokenizedPairs
from interp.io.report import ReportSection
from interp.io.step import Progress, StepResult
from interp.viz.heatmaps import dla_bar, head_heatmap

__all__ = ["DlaWording", "dla_step", "head_patching_step", "head_patterns_step", "top_heads_line"]


def top_heads_line(top: pd.DataFrame, value: str = "normalised") -> str:
    """'L3H1 (+0.52), L5H0 (-0.10)' for the rows of a (layer, head, value) frame."""
    return ", ".join(f"L{r.layer}H{r.head} ({getattr(r, value):+.2f})" for r in top.itertuples())


@dataclass(frozen=True)
class DlaWording:
    """How a kind words its DLA: the per-head figure title, the summary label, whether the top
    heads are the largest signed (True) or absolute (False) contributions, the report text and
    which figure goes in the report ("bar" or "heads"); `check_line` adds the exactness line."""

    heads_title: str = "DLA per head"
    summary_label: str = "top heads by DLA"
    signed: bool = False
    text: Callable[[DLAResult], str] = lambda dla: ""
    section_figure: str = "bar"
    check_line: bool = True


def dla_step(model, pairs: TokenizedPairs, top_k: int, wording: DlaWording) -> tuple[StepResult, pd.DataFrame]:
    """Direct logit attribution: tables `dla`, `dla_per_prompt`; figures `dla`, `dla_heads`.
    Also returns the head rows ranked as the wording says (for head selection downstream)."""
    dla = direct_logit_attribution(model, pairs)
    df = dla.to_frame()
    heads = df[df.kind == "head"].copy()
    figs = {"dla": dla_bar(df, top_k=20, title="Direct logit attribution (mean over prompts)"),
            "dla_heads": head_heatmap(heads, "contribution", title=wording.heads_title)}
    ranked = (heads.sort_values("contribution", ascending=False) if wording.signed
              else heads.reindex(heads.contribution.abs().sort_values(ascending=False).index))
    top = ranked.head(top_k)
    summary = [f"{wording.summary_label}: " + ", ".join(f"{r.label} ({r.contribution:+.2f})" for r in top.itertuples())]
    if wording.check_line:
        summary.append(f"DLA check: parts sum to the logit difference within {dla.max_abs_error:.2e} "
                       f"({dla.verdict}; largest attention remainder {dla.max_remainder:.1e} of a head term)")
    section = ReportSection("Direct logit attribution", text=wording.text(dla),
                            figure=figs["dla" if wording.section_figure == "bar" else "dla_heads"], table=top)
    result = StepResult("dla", tables={"dla": df, "dla_per_prompt": dla.per_prompt_frame()}, figures=figs,
                        summary=summary, sections=[section])
    return result, ranked


def _patch_text(where: str, direction: str, res, metric: str, note: str) -> str:
    how = "clean into corrupt" if direction == "denoising" else "corrupt into clean"
    return (f"Each head's output patched {where} ({how}); {res.n_prompts} prompts; clean {metric} "
            f"{res.clean_metric:.3f}, corrupt {res.corrupt_metric:.3f}. {note}")


def head_patching_step(model, pairs: TokenizedPairs, hp, top_k: int, progress: Progress, *,
                       last_position: bool = False, score_prefix: str = "", title: str = "",
                       note: str = "1 = fully clean behaviour, 0 = corrupt.",
                       executor=None) -> tuple[StepResult, pd.DataFrame]:
    """Patch each head's output (`hp`: direction, metric, batch_size) at every position
    (table `head_patching`) or at the last one only (table `head_patching_last_position`, also
    written as `head_scores` under `<score_prefix>.patching_last_position.<direction>` for the
    atlas). Returns the result and the per-head frame. `executor`: where the all-position sweep
    runs as shards (`interp.core.execution`; None: in-process, unsharded)."""
    kw = dict(direction=hp.direction, metric=hp.metric, batch_size=hp.batch_size, progress=progress)
    res = (patch_heads_last_position(model, pairs, **kw) if last_position
           else patch_heads(model, pairs, executor=executor, **kw))
    table = "head_patching_last_position" if last_position else "head_patching"
    frame = res.to_frame()
    tables = {table: frame}
    if last_position:  # the atlas reads `head_patching` as all-position patching
        tables["head_scores"] = frame.assign(score=f"{score_prefix}.patching_last_position.{hp.direction}",
                                             value=frame["normalised"])[["layer", "head", "score", "value"]]
    where = "at the last position" if last_position else "at all positions"
    fig = head_heatmap(frame, "normalised", title=title or f"Head patching {where} ({hp.direction}, normalised)")
    top = res.top(top_k)
    return StepResult(
        table, tables=tables, figures={table: fig},
        summary=[f"top heads by patching {where} ({hp.direction}, normalised): {top_heads_line(top)}"],
        sections=[ReportSection(f"Head patching {where}", figure=fig, table=top,
                                text=_patch_text(where, hp.direction, res, hp.metric, note))],
    ), frame


def head_patterns_step(model, n_sequences: int, seq_len: int, seed: int, top_k: int) -> StepResult:
    """Previous-token, duplicate-token and induction scores on repeated random tokens: table
    `head_scores` (the atlas reads it by score name) and one figure per score."""
    pat = head_pattern_scores(model, n=n_sequences, seq_len=seq_len, seed=seed)
    df = pat.to_frame()
    parts, figs = [], {}
    for name in pat.scores:
        part = df[df.score == name].sort_values("value", ascending=False).head(3)
        parts.append(f"{name}: " + ", ".join(f"L{r.layer}H{r.head} ({r.value:.2f})" for r in part.itertuples()))
        figs[f"head_pattern_{name}"] = head_heatmap(df[df.score == name], "value", title=f"{name} score per head")
    table = (df.pivot_table(index=["layer", "head"], columns="score", values="value").reset_index()
             .rename_axis(columns=None)  # no stray "score" header column in the HTML table
             .sort_values("induction", ascending=False))
    text = (f"Attention-pattern scores on {pat.n_sequences} sequences of {pat.seq_len} random tokens repeated "
            "twice: previous-token (attention to q-1), duplicate-token (to the earlier copy of the same token), "
            "induction (to the token after the earlier copy). " + "; ".join(parts) + ".")
    return StepResult("head_patterns", tables={"head_scores": df}, figures=figs,
                      summary=["head pattern scores (top 3): " + "; ".join(parts)],
                      sections=[ReportSection("Head pattern scores", text=text, table=table, table_max_rows=top_k)])
