"""Experiment kind ``knowledge_conflicts``: memory heads, context heads and PH3 pruning (Jin et
al. 2024, "Cutting Off the Head Ends the Conflict", arXiv 2402.18154) on the bundled model.

Steps: closed-book answers for every fact of the table (only known facts go on); one seeded
counterfactual context per known fact; the memory-rate and context-rate of the model; memory
and context heads by path patching each head to the logits on the training relations
(per-prompt effects and their sign consistency); PH3 on the held-out relations: prune the top-k
context heads or memory heads (zero their output) and compare both rates with k random heads.

    kind: knowledge_conflicts
    name: knowledge_conflicts
    data: {heldout_relations: [official_language, landmark_country, antonym]}
    analyses: {ph3: {ks: [3, 10], n_random: 3}}

Registered on import (listed in `interp.io.config._KIND_MODULES`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import (
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from interp.analyses.ablation import head_means
from interp.analyses.knowledge import closed_book, conflict_rates, memory_context_heads
from interp.analyses.ph3 import ph3_pruning
from interp.core.errors import ConfigError
from interp.data.knowledge import (
    FactTable,
    conflict_pairs,
    items_frame,
    load_facts,
    make_conflicts,
    split_by_relation,
)
from interp.data.pairs import tokenize_pairs
from interp.io.config import (
    ChatSetting,
    ModelConfig,
    NonNegativeInt,
    OutputConfig,
    PositiveInt,
    _FieldError,
    _Section,
    register_experiment_kind,
)
from interp.io.report import ReportSection
from interp.io.runner import RunOutcome, Task, _progress, register_task
from interp.viz.heatmaps import head_heatmap
from interp.viz.knowledge import ph3_bars, rates_bars

RelationName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_]+$")]


def _unique(values: tuple, what: str) -> tuple:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} listed more than once: {', '.join(repeated)}")
    return values


class KnowledgeDataConfig(_Section):
    facts: Path | None = Field(
        None, description="null (the bundled data/facts.jsonl) or a path to a fact table JSONL file"
    )
    chat: ChatSetting = None
    relations: tuple[RelationName, ...] | None = Field(
        None, description="null (every relation of the table) or a list of relation names"
    )
    heldout_relations: tuple[RelationName, ...] = Field(
        ("official_language", "landmark_country", "antonym"),
        min_length=1,
        description="a non-empty list of relation names: PH3 is evaluated on these, heads are found on the others",
    )
    max_per_relation: PositiveInt | None = Field(
        25,
        description="null (all) or an integer >= 1: known facts kept per relation (seeded sample)",
    )
    known_only: StrictBool = Field(
        True,
        description="true or false: keep only facts the model answers closed-book (false: every fact)",
    )

    @property
    def source(self) -> str:
        """What `interp validate` prints as the data source."""
        return f"fact table {self.facts or 'data/facts.jsonl'} (held out: {', '.join(self.heldout_relations)})"

    @field_validator("facts")
    @classmethod
    def _resolve_facts(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        base = Path((info.context or {}).get("base_dir") or Path.cwd())
        resolved = (base / path.expanduser()).resolve()
        if not resolved.is_file():
            raise ValueError(
                f"fact table {resolved} does not exist (relative paths are resolved against {base})"
            )
        return resolved

    @field_validator("relations")
    @classmethod
    def _relations(cls, relations: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if relations is not None and not relations:
            raise ValueError(
                "empty list; give relation names, or null for every relation of the table"
            )
        return None if relations is None else _unique(relations, "relations")

    @field_validator("heldout_relations")
    @classmethod
    def _heldout(cls, relations: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(relations, "relations")

    @model_validator(mode="after")
    def _heldout_in_relations(self) -> KnowledgeDataConfig:
        if self.relations is not None:
            missing = [r for r in self.heldout_relations if r not in self.relations]
            if missing:
                raise _FieldError(
                    "heldout_relations",
                    f"{', '.join(missing)} not in data.relations ({', '.join(self.relations)})",
                )
            if set(self.relations) <= set(self.heldout_relations):
                raise _FieldError(
                    "heldout_relations",
                    "every relation is held out; leave at least one relation to find the heads on",
                )
        return self


class _Enabled(_Section):
    enabled: StrictBool = True


class HeadsConfig(_Enabled):
    batch_size: PositiveInt = Field(
        64, description="an integer >= 1 (sender heads stacked per forward)"
    )


class PH3Config(_Enabled):
    ks: tuple[PositiveInt, ...] = Field(
        (3, 10), min_length=1, description="a non-empty list of integers >= 1 (heads pruned)"
    )
    n_random: NonNegativeInt = Field(
        3, description="an integer >= 0 (random-head seeds per k and kind)"
    )
    ablation: Literal["zero", "mean"] = "zero"
    closed_book_check: StrictBool = Field(
        True,
        description="true or false: also measure closed-book accuracy on held-out facts per condition",
    )

    @field_validator("ks")
    @classmethod
    def _unique_ks(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        return _unique(ks, "ks")


class KnowledgeAnalysesConfig(_Section):
    rates: _Enabled = _Enabled()
    heads: HeadsConfig = HeadsConfig()
    ph3: PH3Config = PH3Config()

    @model_validator(mode="after")
    def _ph3_needs_heads(self) -> KnowledgeAnalysesConfig:
        if self.ph3.enabled and not self.heads.enabled:
            raise _FieldError(
                "ph3.enabled",
                "PH3 prunes the heads found by analyses.heads; set "
                "analyses.heads.enabled: true (or ph3.enabled: false)",
            )
        return self


class KnowledgeConflictsConfig(_Section):
    kind: Literal["knowledge_conflicts"] = "knowledge_conflicts"
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        description="a name of letters, digits, '_' and '-' (used in the run directory name)"
    )
    description: StrictStr = ""
    seed: NonNegativeInt = Field(0, description="an integer >= 0")
    model: ModelConfig = ModelConfig()
    data: KnowledgeDataConfig = KnowledgeDataConfig()
    analyses: KnowledgeAnalysesConfig = KnowledgeAnalysesConfig()
    output: OutputConfig = OutputConfig()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


register_experiment_kind("knowledge_conflicts", KnowledgeConflictsConfig)


# ------------------------------------------------------------------------------------ runner


def _check_relations(cfg: KnowledgeConflictsConfig, table: FactTable) -> list[str]:
    d = cfg.data
    allowed = ", ".join(table.relations)
    wanted = list(d.relations) if d.relations is not None else list(table.relations)
    for field, names in (
        ("relations", d.relations or ()),
        ("heldout_relations", d.heldout_relations),
    ):
        for i, name in enumerate(names):
            if name not in table.relations:
                raise ConfigError(
                    f"unknown relation {name!r}; the fact table has: {allowed}",
                    path=f"data.{field}[{i}]",
                )
    if set(wanted) <= set(d.heldout_relations):
        raise ConfigError(
            "every relation is held out; leave at least one relation to find the heads on",
            path="data.heldout_relations",
        )
    return wanted


def _prepare(cfg: KnowledgeConflictsConfig, model, log):
    table = load_facts(cfg.data.facts)
    relations = _check_relations(cfg, table)
    log(
        f"fact table: {len(table)} facts, {len(table.relations)} relations ({table.source['file']}); "
        f"using {len(relations)}, held out {', '.join(cfg.data.heldout_relations)}"
    )
    return table, relations


def _sample_known(facts, max_per_relation: int | None, seed: int):
    if max_per_relation is None:
        return list(facts)
    by_rel: dict[str, list] = {}
    for f in facts:
        by_rel.setdefault(f.relation, []).append(f)
    rng = random.Random(seed)
    keep = set()
    for fs in by_rel.values():
        keep |= {
            id(f) for f in (fs if len(fs) <= max_per_relation else rng.sample(fs, max_per_relation))
        }
    return [f for f in facts if id(f) in keep]


def _heads_text(df: pd.DataFrame) -> str:
    return ", ".join(
        f"{r.label} ({r.effect:+.2f}, sign-consistent on {r.sign_consistency:.0%})"
        for r in df.itertuples()
    )


def _execute(
    cfg: KnowledgeConflictsConfig, model, prepared, out: RunOutcome, show: bool, log
) -> None:
    table, relations = prepared
    run, a, d, k_top = out.run, cfg.analyses, cfg.data, cfg.output.top_k
    tok = model.tokenizer

    # -- closed book ---------------------------------------------------------------------
    facts = [f for f in table.facts if f.relation in relations]
    cb = closed_book(model, table, facts, chat=d.chat)
    run.write_table("closed_book", cb.to_frame())
    cb_rel = cb.by_relation()
    run.write_table("closed_book_by_relation", cb_rel)
    known = cb.known_facts() if d.known_only else list(facts)
    line = (
        f"closed book: the model knows {int(cb.known.sum())} of {len(facts)} facts (top-1 = the object's first token): "
        + ", ".join(f"{r.relation} {r.n_known}/{r.n_facts}" for r in cb_rel.itertuples())
    )
    out.summary.append(line)
    out.sections.append(
        ReportSection(
            "Closed-book knowledge",
            text=line
            + (
                "\n\nPrompt: "
                + (
                    "the question as a user turn of the chat template, the assistant turn prefilled with the "
                    "cloze ('The capital of France is')"
                    if d.chat
                    else "the cloze as plain text"
                )
                + (
                    "; only known facts enter the conflict experiments."
                    if d.known_only
                    else "; data.known_only is false: every fact enters the conflict experiments, known or not."
                )
            ),
            table=cb_rel,
        )
    )
    out.finished("closed_book")

    used = _sample_known(known, d.max_per_relation, cfg.seed)
    items = make_conflicts(used, table, tok, seed=cfg.seed, chat=d.chat)
    train, heldout = split_by_relation(items, d.heldout_relations)
    frame = items_frame(items, tok)
    frame["split"] = ["heldout" if r in d.heldout_relations else "train" for r in frame["relation"]]
    run.write_table("conflict_items", frame)
    run.update_manifest(
        task="knowledge",
        dataset={
            "name": "knowledge_conflicts",
            "n": len(items),
            "n_train": len(train),
            "n_heldout": len(heldout),
            "source": {
                **table.source,
                "seed": cfg.seed,
                "max_per_relation": d.max_per_relation,
                "heldout_relations": list(d.heldout_relations),
            },
        },
    )
    log(f"conflict prompts: {len(items)} ({len(train)} train, {len(heldout)} held out)")
    if not items:
        raise ConfigError(
            "the model knows none of the facts closed-book; nothing to study", path="data"
        )

    # -- rates ---------------------------------------------------------------------------
    if a.rates.enabled:
        rates = conflict_rates(model, items)
        run.write_table("conflict_rates", rates.to_frame())
        by_rel = rates.by_relation()
        run.write_table("conflict_rates_by_relation", by_rel)
        s = rates.summary()
        run.write_text("conflict_rates.json", json.dumps(s, indent=2))
        fig = rates_bars(
            by_rel,
            title="Answer under a counterfactual context: memory (o_m), context (o_c), other",
        )
        run.write_figure("conflict_rates", fig)
        line = (
            f"under a counterfactual context ({s['n_prompts']} {'known ' if d.known_only else ''}facts): memory-rate {s['memory_rate']:.1%}, "
            f"context-rate {s['context_rate']:.1%}, other {s['other_rate']:.1%}; mean logit(o_m) - logit(o_c) "
            f"{s['mean_logit_diff']:+.2f}"
        )
        others = Counter(
            t for t, o in zip(rates.top1_tokens, rates.outcome, strict=True) if o == "other"
        )
        if others:
            line += "; most frequent other answers: " + ", ".join(
                f"{t!r} ({n})" for t, n in others.most_common(4)
            )
        out.summary.append(line)
        per = "; ".join(
            f"{r.relation} {r.memory_rate:.0%}/{r.context_rate:.0%}" for r in by_rel.itertuples()
        )
        out.sections.append(
            ReportSection(
                "Memory-rate and context-rate",
                text=(
                    line
                    + ". Per relation (memory/context): "
                    + per
                    + ".\n\nThe context states the fact with another "
                    "object of the same relation ('The capital of France is Rome.'), then the question follows; "
                    "an answer counts by its first token."
                ),
                figure=fig,
                table=by_rel,
            )
        )
        out.finished("conflict_rates")

    if not a.heads.enabled:
        return
    # -- memory / context heads ------------------------------------------------------------
    ds = conflict_pairs(train, tok, seed=cfg.seed)
    pairs = tokenize_pairs(ds, tok)
    rels = [p.meta["relation"] for p in ds]
    log(
        f"path patching {len(ds)} train pairs ({ds.source['n_unpaired']} prompts without a same-length partner)"
    )
    bar, prog = _progress("path patching heads -> logits", show)
    eff = memory_context_heads(model, pairs, rels, batch_size=a.heads.batch_size, progress=prog)
    bar.close()
    df = eff.to_frame()
    run.write_table("conflict_pairs", _flat(ds.to_frame()))
    run.write_table("head_effects", df)
    run.write_table("head_effects_per_prompt", eff.per_prompt_frame())
    by_rel_heads = eff.by_relation_frame()
    run.write_table("head_effects_by_relation", by_rel_heads)
    run.write_table(
        "head_scores",
        pd.concat(
            [
                df.assign(score="knowledge.memory_context", value=df["effect"]),
                df.assign(score="knowledge.sign_consistency", value=df["sign_consistency"]),
            ]
        )[["layer", "head", "score", "value"]],
    )
    fig = head_heatmap(
        df,
        "effect",
        title="Memory (+, blue) and context (-, red) heads: path patching to "
        "logit(o_m) - logit(o_c), mean over prompts",
    )
    run.write_figure("head_effects", fig)
    fig_cons = head_heatmap(
        df.assign(
            signed_consistency=df["sign_consistency"]
            * df["effect"].apply(lambda e: 1 if e > 0 else -1)
        ),
        "signed_consistency",
        title="Sign consistency across prompts (signed by the mean effect: + memory, - context)",
    )
    run.write_figure("head_sign_consistency", fig_cons)
    mem, ctx = eff.top_memory(k_top), eff.top_context(k_top)
    out.summary.append(
        f"memory heads (effect on logit(o_m) - logit(o_c), {len(ds)} train prompts): {_heads_text(mem.head(5))}"
    )
    out.summary.append(f"context heads: {_heads_text(ctx.head(5))}")
    n_rel = by_rel_heads["relation"].nunique()
    flips = []
    for r in pd.concat([mem.head(5), ctx.head(5)]).itertuples():
        g = by_rel_heads[(by_rel_heads["layer"] == r.layer) & (by_rel_heads["head"] == r.head)]
        flips.append(f"{r.label} {int(g['same_sign_as_overall'].sum())}/{n_rel}")
    text = (
        f"Each head path-patched to the logits (MLPs recomputed, other heads frozen) from a corrupt prompt: the "
        f"conflict prompt of another fact of the same relation (different subject, o_m and o_c). Effect = "
        f"m(clean) - m(patched) with m = logit(o_m) - logit(o_c) at the last position: > 0 memory head, < 0 "
        f"context head. {len(ds)} prompts from {n_rel} training relations; clean m {float(eff.clean_metric.mean()):+.2f}, "
        f"corrupt m {float(eff.corrupt_metric.mean()):+.2f}.\n\nTop memory heads: {_heads_text(mem)}.\n\n"
        f"Top context heads: {_heads_text(ctx)}.\n\nSign consistency = share of prompts whose effect has the "
        f"sign of the mean (JUICE: many heads do both jobs). Relations where the top heads keep the overall "
        f"sign: {', '.join(flips)}."
    )
    out.sections.append(
        ReportSection(
            "Memory and context heads",
            text=text,
            figure=fig,
            table=pd.concat([mem.assign(role="memory"), ctx.assign(role="context")]),
        )
    )
    out.sections.append(
        ReportSection(
            "Sign consistency",
            figure=fig_cons,
            table=by_rel_heads[
                by_rel_heads.set_index(["layer", "head"]).index.isin(
                    [(r.layer, r.head) for r in pd.concat([mem.head(5), ctx.head(5)]).itertuples()]
                )
            ],
            table_max_rows=60,
        )
    )
    out.finished("memory_context_heads")

    # -- PH3 ----------------------------------------------------------------------------------
    p = a.ph3
    if not p.enabled:
        return
    if not heldout:
        raise ConfigError(
            "no known facts in the held-out relations; PH3 has nothing to evaluate",
            path="data.heldout_relations",
        )
    means = None
    if p.ablation == "mean":
        means = head_means(model, [b.clean for b in pairs.by_length().batches])
    bar, prog = _progress("PH3 pruning", show)
    ph3 = ph3_pruning(
        model,
        heldout,
        eff,
        table,
        ks=p.ks,
        n_random=p.n_random,
        seed=cfg.seed,
        mode=p.ablation,
        means=means,
        chat=d.chat,
        closed_book_check=p.closed_book_check,
        progress=prog,
    )
    bar.close()
    summ = ph3.summary()
    run.write_table("ph3", ph3.to_frame())
    run.write_table("ph3_summary", summ)
    fig = ph3_bars(
        summ,
        title=f"PH3 on held-out relations ({', '.join(d.heldout_relations)}): {p.ablation}-ablating heads",
    )
    run.write_figure("ph3", fig)
    base = summ[summ["condition"] == "none"].iloc[0]
    lines = [
        f"PH3 on {len(heldout)} held-out prompts ({', '.join(d.heldout_relations)}): before pruning memory-rate "
        f"{base.memory_rate:.1%}, context-rate {base.context_rate:.1%}, closed-book {base.closed_book_accuracy:.0%}"
    ]
    for k in sorted(set(summ["k"]) - {0}):
        for kind in ("context", "memory"):
            sel = summ[(summ["condition"] == f"prune_{kind}") & (summ["k"] == k)]
            rnd = summ[(summ["condition"] == f"random_{kind}") & (summ["k"] == k)]
            if sel.empty:
                continue
            s = sel.iloc[0]
            ctrl = ""
            if not rnd.empty:
                r = rnd.iloc[0]
                ctrl = (
                    f" vs {int(r.n_seeds)} random head sets ({int(r.n_distinct_sets)} distinct): memory "
                    f"{r.memory_rate:.1%} ± {r.memory_rate_std:.1%}, context {r.context_rate:.1%} ± "
                    f"{r.context_rate_std:.1%}, closed-book {r.closed_book_accuracy:.0%}"
                )
            lines.append(
                f"prune top-{k} {kind} heads: memory-rate {s.memory_rate:.1%}, context-rate "
                f"{s.context_rate:.1%}, closed-book {s.closed_book_accuracy:.0%}{ctrl}"
            )
    out.summary.extend(lines)
    out.sections.append(
        ReportSection(
            "PH3: pruning memory or context heads",
            text=(
                "Heads ranked on the training relations; rates on the held-out relations. Pruning = "
                f"{p.ablation}-ablating the head's output z at every position, no weight update. Random control: "
                f"{p.n_random} seeds of k heads from the same layers as the "
                "selected heads, never a selected head of either kind.\n\n"
                + "\n\n".join(lines)
                + f"\n\nContext heads pruned: {', '.join(f'L{x}H{y}' for x, y in ph3.context_heads)}; memory heads "
                f"pruned: {', '.join(f'L{x}H{y}' for x, y in ph3.memory_heads)} (the first k of each list)."
            ),
            figure=fig,
            table=summ,
        )
    )
    out.finished("ph3")


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    return df.map(lambda v: json.dumps(v) if isinstance(v, dict | list | tuple) else v)


register_task("knowledge_conflicts", Task(prepare=_prepare, execute=_execute))
