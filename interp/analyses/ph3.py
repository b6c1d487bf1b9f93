"""PH3 (Jin et al. 2024, arXiv 2402.18154): prune memory or context heads, no weight update.

Pruning = zeroing the head's output z at every position (`interp.analyses.ablation`; mean
ablation is an option). Pruning the top-k *context* heads should move the model towards its
memory (memory-rate up, context-rate down); pruning the top-k *memory* heads towards the context.
Heads are ranked on training relations (`memory_context_heads`) and the rates are measured on
held-out relations, so the effect is not fitted to the evaluation prompts.

Control: k random heads, excluding every selected head of either kind, drawn with the same
layer distribution as the selected heads (`ablation.matched_random_heads`, shared with the retrieval-head
masking test: one random head from each selected head's layer, the nearest layer with a free
head where that layer has none left), for several seeds.
Each condition also reports closed-book accuracy on the held-out facts, to show that a change
of rates is not bought by breaking the model's knowledge.

Our choices where the paper's details are not checked here: heads are ranked by their mean
effect (not by a threshold), "the excluded set" for random heads is the top-max(k) heads of
both kinds, the heads are zeroed at every position of the prompt, and a rate counts the top-1
next token against the first tokens of o_m and o_c (anything else is "other").

    res = ph3_pruning(model, heldout_items, effects, table, ks=(3, 10), n_random=3)
    res.to_frame()            # condition, k, seed, heads, relation, rates ...
    res.summary()             # one row per (condition, k): mean and std over random seeds
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.ablation import ablated_heads, matched_random_heads
from interp.analyses.knowledge import OUTCOMES, HeadEffects, conflict_rates, last_logits
from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.types import Head
from interp.data.knowledge import ConflictItem, FactTable, answer_token, closed_book_prompt

ProgressFn = Callable[[int, int], None]
CONDITIONS = ("none", "prune_context", "prune_memory", "random_context", "random_memory")

__all__ = ["CONDITIONS", "PH3Result", "ph3_pruning", "top_heads"]


def top_heads(effects: HeadEffects, kind: str, k: int) -> list[Head]:
    """The k heads with the largest mean effect of `kind` ("memory" > 0, "context" < 0)."""
    if kind not in ("memory", "context"):
        raise InterpError(f"unknown head kind {kind!r}; allowed: memory, context")
    df = effects.top_memory(k) if kind == "memory" else effects.top_context(k)
    return [(int(r.layer), int(r.head)) for r in df.itertuples()]


@dataclass(frozen=True)
class PH3Result:
    """Rates under each pruning condition; `frame` has one row per (condition, k, seed,
    relation) with relation "all" for the whole held-out set."""

    frame: pd.DataFrame
    memory_heads: list[Head]  # ranked, the longest k
    context_heads: list[Head]
    mode: str

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """One row per (condition, k) on all held-out prompts; random conditions give the mean
        and std over seeds and how many distinct head sets the seeds drew (layer matching can
        leave a single choice, e.g. when a layer has only k non-selected heads)."""
        df = self.frame[self.frame["relation"] == "all"]
        cols = [
            "memory_rate",
            "context_rate",
            "other_rate",
            "mean_logit_diff",
            "closed_book_accuracy",
        ]
        g = df.groupby(["condition", "k"], sort=False)
        out = g[cols].mean()
        std = g[cols].std(ddof=0).add_suffix("_std")
        distinct = g["heads"].nunique().rename("n_distinct_sets")
        out = out.join(std).join(g.size().rename("n_seeds")).join(distinct).reset_index()
        return out


def _closed_book_accuracy(model: HookedModel, prompts: list[str], answers: torch.Tensor) -> float:
    if not prompts:
        return float("nan")
    return float((last_logits(model, prompts).argmax(-1) == answers).float().mean())


def ph3_pruning(
    model: HookedModel,
    items: Sequence[ConflictItem],
    effects: HeadEffects,
    table: FactTable,
    *,
    ks: Sequence[int] = (3, 10),
    n_random: int = 3,
    seed: int = 0,
    mode: str = "zero",
    means: torch.Tensor | None = None,
    chat: bool = True,
    closed_book_check: bool = True,
    progress: ProgressFn | None = None,
) -> PH3Result:
    """Memory-rate and context-rate on `items` (held-out relations) before and after pruning
    the top-k context heads, the top-k memory heads and k random heads (n_random seeds)."""
    if not items:
        raise InterpError("PH3 needs held-out conflict items; none given")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise InterpError(f"ks must be integers >= 1, got {list(ks)}")
    L, H = model.spec.n_layers, model.spec.n_heads
    kmax = ks[-1]
    mem, ctx = top_heads(effects, "memory", kmax), top_heads(effects, "context", kmax)
    exclude = set(mem) | set(ctx)
    tok = model.tokenizer
    cb_prompts = (
        [
            closed_book_prompt(tok, table.relations[it.fact.relation], it.fact.subject, chat=chat)
            for it in items
        ]
        if closed_book_check
        else []
    )
    cb_answers = torch.tensor([answer_token(tok, it.fact.object) for it in items])

    plan: list[tuple[str, int, int | None, list[Head]]] = [("none", 0, None, [])]
    for k in ks:
        for kind, heads in (("context", ctx), ("memory", mem)):
            if len(heads) < k:  # fewer heads of this sign than k: no such condition
                continue
            plan.append((f"prune_{kind}", k, None, heads[:k]))
            for s in range(n_random):
                draw = random.Random(f"{seed}-{kind}-{k}-{s}").randrange(2**31)
                plan.append(
                    (
                        f"random_{kind}",
                        k,
                        s,
                        sorted(matched_random_heads(L, H, heads[:k], exclude, draw)),
                    )
                )
    rows = []
    for i, (cond, k, s, heads) in enumerate(plan):
        with ablated_heads(model, heads, mode=mode, means=means if mode == "mean" else None):
            rates = conflict_rates(model, items)
            cb = _closed_book_accuracy(model, cb_prompts, cb_answers)
        label = ", ".join(f"L{la}H{h}" for la, h in heads)
        base = {"condition": cond, "k": k, "seed": s, "heads": label}
        rows.append({**base, "relation": "all", **rates.summary(), "closed_book_accuracy": cb})
        for r in rates.by_relation().to_dict("records"):
            rows.append({**base, **r, "closed_book_accuracy": float("nan")})
        if progress:
            progress(i + 1, len(plan))
    frame = pd.DataFrame(rows)
    frame["seed"] = frame["seed"].astype("Int64")
    frame = frame[
        [
            "condition",
            "k",
            "seed",
            "heads",
            "relation",
            "n_prompts",
            *(f"{o}_rate" for o in OUTCOMES),
            "mean_logit_diff",
            "closed_book_accuracy",
        ]
    ]
    return PH3Result(frame, mem, ctx, mode)
