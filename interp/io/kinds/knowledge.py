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

Registered on import (`interp.io.registry.load_kinds` imports every module of this package).
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pandas as pd

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
from interp.io.kinds.knowledge_config import KnowledgeConflictsConfig
from interp.io.limits import attribute
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.step import StepContext, StepResult, flat_frame
from interp.viz.heatmaps import head_heatmap
from interp.viz.knowledge import ph3_bars, rates_bars

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


def prepare(cfg: KnowledgeConflictsConfig, model, log):
    table = load_facts(cfg.data.facts)
    relations = _check_relations(cfg, table)
    log(
        f"fact table: {len(table)} facts, {len(table.relations)} relations ({table.source['file']}); "
        f"using {len(relations)}, held out {', '.join(cfg.data.heldout_relations)}"
    )
    return table, relations


def check(cfg: KnowledgeConflictsConfig, tokenizer) -> list[str]:
    """The fact table and the configured relations (no model needed)."""
    table = load_facts(cfg.data.facts)
    relations = _check_relations(cfg, table)
    return [f"data: {len(table)} facts in {table.source['file']}, {len(relations)} relations used"]


def estimate(cfg: KnowledgeConflictsConfig, model, data) -> dict[str, int]:
    """Forward passes per field to lower: closed-book answers for every fact of the used
    relations, path patching of every head on the training prompts (one per pair and head,
    plus baselines), and PH3 (every held-out prompt under each condition: none, pruned and
    random heads of both kinds per k; twice with the closed-book check). With no fact table
    yet, a lower bound: one fact, one training and one held-out prompt, one layer and head."""
    d, a = cfg.data, cfg.analyses
    L, H = (model.spec.n_layers, model.spec.n_heads) if model is not None else (1, 1)
    n_facts, n_train, n_heldout = 1, 1, 1
    if data is not None:
        table, relations = data
        counts = Counter(f.relation for f in table.facts if f.relation in relations)
        n_facts = sum(counts.values())
        kept = {r: min(c, d.max_per_relation or c) for r, c in counts.items()}
        n_heldout = sum(c for r, c in kept.items() if r in d.heldout_relations)
        n_train = sum(kept.values()) - n_heldout
    costs = {"data.relations": n_facts}
    if a.heads.enabled:
        costs["data.max_per_relation"] = n_train * (L * H + 2)
        if a.ph3.enabled:
            conditions = (1 + 2 * len(a.ph3.ks) * (1 + a.ph3.n_random)) * (2 if a.ph3.closed_book_check else 1)
            attribute(costs, n_heldout, conditions, "data.max_per_relation", "analyses.ph3.n_random")
    return costs


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


def closed_book_step(ctx: StepContext) -> StepResult:
    table, relations = ctx.data
    d = ctx.cfg.data
    facts = [f for f in table.facts if f.relation in relations]
    cb = closed_book(ctx.model, table, facts, chat=d.chat)
    cb_rel = cb.by_relation()
    ctx.state["known"] = cb.known_facts() if d.known_only else list(facts)
    line = (f"closed book: the model knows {int(cb.known.sum())} of {len(facts)} facts (top-1 = the object's first "
            "token): " + ", ".join(f"{r.relation} {r.n_known}/{r.n_facts}" for r in cb_rel.itertuples()))
    prompt = ("the question as a user turn of the chat template, the assistant turn prefilled with the cloze ('The "
              "capital of France is')" if d.chat else "the cloze as plain text")
    which = ("; only known facts enter the conflict experiments." if d.known_only else
             "; data.known_only is false: every fact enters the conflict experiments, known or not.")
    return StepResult("closed_book", tables={"closed_book": cb.to_frame(), "closed_book_by_relation": cb_rel},
                      summary=[line], sections=[ReportSection("Closed-book knowledge", table=cb_rel,
                                                              text=line + "\n\nPrompt: " + prompt + which)])


def conflicts_step(ctx: StepContext) -> StepResult:
    """One seeded counterfactual context per known fact, split into train and held-out relations."""
    cfg, (table, _) = ctx.cfg, ctx.data
    d, tok = cfg.data, ctx.model.tokenizer
    used = _sample_known(ctx.state["known"], d.max_per_relation, cfg.seed)
    items = make_conflicts(used, table, tok, seed=cfg.seed, chat=d.chat, progress=ctx.progress("conflict prompts"))
    train, heldout = ctx.state["train"], ctx.state["heldout"] = split_by_relation(items, d.heldout_relations)
    ctx.state["items"] = items
    frame = items_frame(items, tok)
    frame["split"] = ["heldout" if r in d.heldout_relations else "train" for r in frame["relation"]]
    ctx.log(f"conflict prompts: {len(items)} ({len(train)} train, {len(heldout)} held out)")
    result = StepResult(tables={"conflict_items": frame}, manifest={"task": "knowledge", "dataset": {
        "name": "knowledge_conflicts", "n": len(items), "n_train": len(train), "n_heldout": len(heldout),
        "source": {**table.source, "seed": cfg.seed, "max_per_relation": d.max_per_relation,
                   "heldout_relations": list(d.heldout_relations)}}})
    return result


def require_conflicts(ctx: StepContext) -> None:
    """Refuse to go on (after `conflict_items` is written) when no fact made a conflict prompt."""
    if not ctx.state["items"]:
        raise ConfigError("the model knows none of the facts closed-book; nothing to study", path="data")


def _rates_line(s: dict, rates, known_only: bool) -> str:
    line = (f"under a counterfactual context ({s['n_prompts']} {'known ' if known_only else ''}facts): memory-rate "
            f"{s['memory_rate']:.1%}, context-rate {s['context_rate']:.1%}, other {s['other_rate']:.1%}; mean "
            f"logit(o_m) - logit(o_c) {s['mean_logit_diff']:+.2f}")
    others = Counter(t for t, o in zip(rates.top1_tokens, rates.outcome, strict=True) if o == "other")
    if others:
        line += "; most frequent other answers: " + ", ".join(f"{t!r} ({n})" for t, n in others.most_common(4))
    return line


def rates_step(ctx: StepContext) -> StepResult | None:
    if not ctx.cfg.analyses.rates.enabled:
        return None
    rates = conflict_rates(ctx.model, ctx.state["items"])
    by_rel, s = rates.by_relation(), rates.summary()
    fig = rates_bars(by_rel, title="Answer under a counterfactual context: memory (o_m), context (o_c), other")
    line = _rates_line(s, rates, ctx.cfg.data.known_only)
    per = "; ".join(f"{r.relation} {r.memory_rate:.0%}/{r.context_rate:.0%}" for r in by_rel.itertuples())
    text = (line + ". Per relation (memory/context): " + per + ".\n\nThe context states the fact with another "
            "object of the same relation ('The capital of France is Rome.'), then the question follows; an answer "
            "counts by its first token.")
    return StepResult("conflict_rates",
                      tables={"conflict_rates": rates.to_frame(), "conflict_rates_by_relation": by_rel},
                      texts={"conflict_rates.json": json.dumps(s, indent=2)}, figures={"conflict_rates": fig},
                      summary=[line], sections=[ReportSection("Memory-rate and context-rate", text=text, figure=fig,
                                                              table=by_rel)])


def _head_figures(df: pd.DataFrame) -> dict:
    signed = df.assign(signed_consistency=df["sign_consistency"] * df["effect"].apply(lambda e: 1 if e > 0 else -1))
    return {"head_effects": head_heatmap(df, "effect", title="Memory (+, blue) and context (-, red) heads: path "
                                         "patching to logit(o_m) - logit(o_c), mean over prompts"),
            "head_sign_consistency": head_heatmap(signed, "signed_consistency", title="Sign consistency across "
                                                  "prompts (signed by the mean effect: + memory, - context)")}


def _heads_report(eff, ds, by_rel: pd.DataFrame, k_top: int, figs: dict) -> tuple[list[str], list[ReportSection]]:
    mem, ctx = eff.top_memory(k_top), eff.top_context(k_top)
    top5 = pd.concat([mem.head(5), ctx.head(5)])
    n_rel = by_rel["relation"].nunique()
    flips = []
    for r in top5.itertuples():
        g = by_rel[(by_rel["layer"] == r.layer) & (by_rel["head"] == r.head)]
        flips.append(f"{r.label} {int(g['same_sign_as_overall'].sum())}/{n_rel}")
    text = (
        f"Each head path-patched to the logits (MLPs recomputed, other heads frozen) from a corrupt prompt: the "
        f"conflict prompt of another fact of the same relation (different subject, o_m and o_c). Effect = "
        f"m(clean) - m(patched) with m = logit(o_m) - logit(o_c) at the last position: > 0 memory head, < 0 "
        f"context head. {len(ds)} prompts from {n_rel} training relations; "
        f"clean m {float(eff.clean_metric.mean()):+.2f}, "
        f"corrupt m {float(eff.corrupt_metric.mean()):+.2f}.\n\nTop memory heads: {_heads_text(mem)}.\n\n"
        f"Top context heads: {_heads_text(ctx)}.\n\nSign consistency = share of prompts whose effect has the "
        f"sign of the mean (JUICE: many heads do both jobs). Relations where the top heads keep the overall "
        f"sign: {', '.join(flips)}.")
    keep = by_rel.set_index(["layer", "head"]).index.isin([(r.layer, r.head) for r in top5.itertuples()])
    summary = [f"memory heads (effect on logit(o_m) - logit(o_c), {len(ds)} train prompts): {_heads_text(mem.head(5))}",
               f"context heads: {_heads_text(ctx.head(5))}"]
    return summary, [
        ReportSection("Memory and context heads", text=text, figure=figs["head_effects"],
                      table=pd.concat([mem.assign(role="memory"), ctx.assign(role="context")])),
        ReportSection("Sign consistency", figure=figs["head_sign_consistency"], table=by_rel[keep], table_max_rows=60)]


def heads_step(ctx: StepContext) -> StepResult | None:
    """Memory and context heads: each head path-patched to the logits on the training relations."""
    a, tok = ctx.cfg.analyses, ctx.model.tokenizer
    if not a.heads.enabled:
        return None
    ds = conflict_pairs(ctx.state["train"], tok, seed=ctx.cfg.seed)
    pairs = ctx.state["pairs"] = tokenize_pairs(ds, tok)
    ctx.log(f"path patching {len(ds)} train pairs ({ds.source['n_unpaired']} prompts without a same-length partner)")
    eff = ctx.state["effects"] = memory_context_heads(ctx.model, pairs, [p.meta["relation"] for p in ds],
                                                      batch_size=a.heads.batch_size,
                                                      progress=ctx.progress("path patching heads -> logits"))
    df, by_rel = eff.to_frame(), eff.by_relation_frame()
    figs = _head_figures(df)
    summary, sections = _heads_report(eff, ds, by_rel, ctx.cfg.output.top_k, figs)
    scores = pd.concat([df.assign(score="knowledge.memory_context", value=df["effect"]),
                        df.assign(score="knowledge.sign_consistency", value=df["sign_consistency"])])
    return StepResult("memory_context_heads", tables={
        "conflict_pairs": flat_frame(ds.to_frame(), json.dumps), "head_effects": df,
        "head_effects_per_prompt": eff.per_prompt_frame(), "head_effects_by_relation": by_rel,
        "head_scores": scores[["layer", "head", "score", "value"]]}, figures=figs, summary=summary, sections=sections)


def _ph3_line(summ: pd.DataFrame, k: int, kind: str) -> str | None:
    sel = summ[(summ["condition"] == f"prune_{kind}") & (summ["k"] == k)]
    rnd = summ[(summ["condition"] == f"random_{kind}") & (summ["k"] == k)]
    if sel.empty:
        return None
    s, ctrl = sel.iloc[0], ""
    if not rnd.empty:
        r = rnd.iloc[0]
        ctrl = (f" vs {int(r.n_seeds)} random head sets ({int(r.n_distinct_sets)} distinct): memory "
                f"{r.memory_rate:.1%} ± {r.memory_rate_std:.1%}, context {r.context_rate:.1%} ± "
                f"{r.context_rate_std:.1%}, closed-book {r.closed_book_accuracy:.0%}")
    return (f"prune top-{k} {kind} heads: memory-rate {s.memory_rate:.1%}, context-rate "
            f"{s.context_rate:.1%}, closed-book {s.closed_book_accuracy:.0%}{ctrl}")


def ph3_step(ctx: StepContext) -> StepResult | None:
    """PH3 on the held-out relations: prune the top-k context or memory heads vs k random heads."""
    cfg, (table, _) = ctx.cfg, ctx.data
    p, d, heldout = cfg.analyses.ph3, cfg.data, ctx.state["heldout"]
    if not (cfg.analyses.heads.enabled and p.enabled):
        return None
    if not heldout:
        raise ConfigError("no known facts in the held-out relations; PH3 has nothing to evaluate",
                          path="data.heldout_relations")
    means = (head_means(ctx.model, [b.clean for b in ctx.state["pairs"].by_length().batches])
             if p.ablation == "mean" else None)
    ph3 = ph3_pruning(ctx.model, heldout, ctx.state["effects"], table, ks=p.ks, n_random=p.n_random, seed=cfg.seed,
                      mode=p.ablation, means=means, chat=d.chat, closed_book_check=p.closed_book_check,
                      progress=ctx.progress("PH3 pruning"))
    summ = ph3.summary()
    fig = ph3_bars(summ, title=f"PH3 on held-out relations ({', '.join(d.heldout_relations)}): "
                               f"{p.ablation}-ablating heads")
    base = summ[summ["condition"] == "none"].iloc[0]
    lines = [f"PH3 on {len(heldout)} held-out prompts ({', '.join(d.heldout_relations)}): before pruning memory-rate "
             f"{base.memory_rate:.1%}, context-rate {base.context_rate:.1%}, "
             f"closed-book {base.closed_book_accuracy:.0%}"]
    lines += [line for k in sorted(set(summ["k"]) - {0}) for kind in ("context", "memory")
              if (line := _ph3_line(summ, k, kind)) is not None]
    text = ("Heads ranked on the training relations; rates on the held-out relations. Pruning = "
            f"{p.ablation}-ablating the head's output z at every position, no weight update. Random control: "
            f"{p.n_random} seeds of k heads from the same layers as the selected heads, never a selected head of "
            "either kind.\n\n" + "\n\n".join(lines) + f"\n\nContext heads pruned: "
            f"{', '.join(f'L{x}H{y}' for x, y in ph3.context_heads)}; memory heads pruned: "
            f"{', '.join(f'L{x}H{y}' for x, y in ph3.memory_heads)} (the first k of each list).")
    return StepResult("ph3", tables={"ph3": ph3.to_frame(), "ph3_summary": summ}, figures={"ph3": fig}, summary=lines,
                      sections=[ReportSection("PH3: pruning memory or context heads", text=text, figure=fig,
                                              table=summ)])


register_kind("knowledge_conflicts", KnowledgeConflictsConfig, closed_book_step, conflicts_step, require_conflicts,
              rates_step,
              heads_step, ph3_step, prepare=prepare, check=check, estimate=estimate)
