"""Knowledge conflicts: closed-book knowledge, memory/context rates, memory and context heads.

After Jin et al. 2024 ("Cutting Off the Head Ends the Conflict", arXiv 2402.18154); the prompts
come from `interp.data.knowledge`. Three analyses:

- `closed_book`: which facts the model knows without context (top-1 next token = the first
  token of the object). Only those facts enter the conflict experiments, so the memory answer
  o_m is really the model's memory.
- `conflict_rates`: on counterfactual-context prompts, the share whose top-1 next token is o_m
  (memory-rate), o_c (context-rate) or anything else, and the logit difference
  logit(o_m) - logit(o_c) at the last position.
- `memory_context_heads`: each head's direct effect on logit(o_m) - logit(o_c) by path patching
  the head to the logits (Wang et al. 2022), per prompt. Clean = the conflict prompt; corrupt =
  the conflict prompt of another fact of the same relation (different subject, different o_m
  and o_c, same token length; `conflict_pairs`). Pass 1 runs the clean prompt with the sender's
  output taken from the corrupt prompt, every other head frozen at its clean output and the MLPs
  recomputed; the metric is read at the last position. The effect is
  m(clean) - m(sender patched): what the head's clean output adds to the metric relative to a
  prompt that holds neither this fact nor its counterfactual. Positive = memory head (pushes
  o_m), negative = context head (pushes o_c). Jin et al. rank heads the same way (memory heads
  raise, context heads lower the metric); the pairing is our choice (their exact corruption is
  not checked here). Per-prompt effects give each head's *sign consistency*: the share of
  prompts on which its effect has the sign of its mean (JUICE, ICML 2025: many heads do both
  jobs, so a mean alone can mislead).

Speed: with every head except the sender frozen, positions no longer exchange information, so
only the last position's residual stream needs recomputing: each sender costs one
one-position forward from its layer (`path_patch_last_position`; equal to
`interp.analyses.path_patching.path_patch_senders` to the logits, checked in the tests).

    known = closed_book(model, table)                       # ClosedBookResult
    items = make_conflicts(known.known_facts(), table, model.tokenizer, seed=0)
    rates = conflict_rates(model, items)                    # .memory_rate, .context_rate
    pairs = tokenize_pairs(conflict_pairs(items, model.tokenizer), model.tokenizer)
    heads = memory_context_heads(model, pairs)              # HeadEffects; .top_memory(5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.knowledge_heads import (
    HeadEffects,
    memory_context_heads,
    path_patch_last_position,
)
from interp.core.errors import DatasetError, InterpError
from interp.core.metrics import Targets, get_metric, readout
from interp.core.model import HookedModel
from interp.data.knowledge import (
    ConflictItem,
    Fact,
    FactTable,
    answer_token,
    closed_book_prompt,
)

OUTCOMES = ("memory", "context", "other")

__all__ = [
    "ClosedBookResult",
    "ConflictRates",
    "HeadEffects",
    "closed_book",
    "conflict_rates",
    "memory_context_heads",
    "path_patch_last_position",
    "last_logits",
]


@torch.no_grad()
def last_logits(model: HookedModel, prompts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Last-position logits (n, vocab) of texts of any lengths (batched by token length)."""
    ids = [model.encode(p) for p in prompts]
    out: torch.Tensor | None = None
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_len.setdefault(len(row), []).append(i)
    for idxs in by_len.values():
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s : s + batch_size]
            toks = torch.tensor([ids[i] for i in chunk], device=model.device)
            last = model.forward(toks)[:, -1].float().cpu()
            if out is None:
                out = torch.empty(len(prompts), last.shape[-1])
            out[chunk] = last
    if out is None:
        raise InterpError("no prompts given")
    return out


# ---------------------------------------------------------------------------- closed book


@dataclass(frozen=True)
class ClosedBookResult:
    """Closed-book answers, one per fact: does the top-1 next token equal the object's first?"""

    facts: tuple[Fact, ...]
    prompts: list[str]
    answer_tokens: list[str]
    top1_tokens: list[str]
    known: torch.Tensor  # bool (fact,)
    answer_prob: torch.Tensor  # (fact,)
    answer_rank: torch.Tensor  # (fact,) 0 = top-1

    def known_facts(self) -> list[Fact]:
        return [f for f, k in zip(self.facts, self.known.tolist(), strict=True) if k]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "subject": [f.subject for f in self.facts],
                "relation": [f.relation for f in self.facts],
                "object": [f.object for f in self.facts],
                "answer_token": self.answer_tokens,
                "top1_token": self.top1_tokens,
                "known": self.known.numpy(),
                "answer_prob": self.answer_prob.numpy(),
                "answer_rank": self.answer_rank.numpy(),
                "prompt": self.prompts,
            }
        )

    def by_relation(self) -> pd.DataFrame:
        df = self.to_frame()
        g = df.groupby("relation", sort=False)
        return pd.DataFrame(
            {"n_facts": g.size(), "n_known": g["known"].sum(), "accuracy": g["known"].mean()}
        ).reset_index()


def closed_book(
    model: HookedModel,
    table: FactTable,
    facts: Sequence[Fact] | None = None,
    *,
    chat: bool = True,
) -> ClosedBookResult:
    """Ask every fact (default: the whole table) with no context."""
    facts = tuple(table.facts if facts is None else facts)
    tok = model.tokenizer
    prompts = [
        closed_book_prompt(tok, table.relations[f.relation], f.subject, chat=chat) for f in facts
    ]
    answers = torch.tensor([answer_token(tok, f.object) for f in facts])
    last = last_logits(model, prompts)
    r = torch.arange(len(facts))
    top1 = last.argmax(-1)
    rank = (last > last[r, answers].unsqueeze(1)).sum(-1)
    return ClosedBookResult(
        facts,
        prompts,
        [tok.decode([a]) for a in answers.tolist()],
        [tok.decode([t]) for t in top1.tolist()],
        top1 == answers,
        last.softmax(-1)[r, answers],
        rank,
    )


# ---------------------------------------------------------------------------- conflict rates


@dataclass(frozen=True)
class ConflictRates:
    """Which answer the model gives under a counterfactual context, per prompt."""

    relations: list[str]
    subjects: list[str]
    outcome: list[str]  # "memory" | "context" | "other"
    top1_tokens: list[str]
    logit_diff: torch.Tensor  # (prompt,) logit(o_m) - logit(o_c) at the last position
    memory_prob: torch.Tensor
    context_prob: torch.Tensor

    def _rate(self, what: str) -> float:
        return sum(o == what for o in self.outcome) / max(len(self.outcome), 1)

    @property
    def memory_rate(self) -> float:
        return self._rate("memory")

    @property
    def context_rate(self) -> float:
        return self._rate("context")

    @property
    def other_rate(self) -> float:
        return self._rate("other")

    def summary(self) -> dict[str, float]:
        return {
            "n_prompts": len(self.outcome),
            "memory_rate": self.memory_rate,
            "context_rate": self.context_rate,
            "other_rate": self.other_rate,
            "mean_logit_diff": float(self.logit_diff.mean()) if len(self.outcome) else float("nan"),
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "relation": self.relations,
                "subject": self.subjects,
                "outcome": self.outcome,
                "top1_token": self.top1_tokens,
                "logit_diff": self.logit_diff.numpy(),
                "memory_prob": self.memory_prob.numpy(),
                "context_prob": self.context_prob.numpy(),
            }
        )

    def by_relation(self) -> pd.DataFrame:
        df = self.to_frame()
        rows = []
        for rel, g in df.groupby("relation", sort=False):
            rows.append(
                {
                    "relation": rel,
                    "n_prompts": len(g),
                    **{f"{o}_rate": float((g["outcome"] == o).mean()) for o in OUTCOMES},
                    "mean_logit_diff": float(g["logit_diff"].mean()),
                }
            )
        return pd.DataFrame(rows)


def conflict_rates(model: HookedModel, items: Sequence[ConflictItem]) -> ConflictRates:
    """Memory-rate / context-rate of `model` as it is now (wrap in `ablated_heads` to prune)."""
    if not items:
        raise DatasetError("no conflict items given")
    last = last_logits(model, [it.prompt for it in items])
    m = torch.tensor([it.memory_token for it in items])
    c = torch.tensor([it.context_token for it in items])
    targets = Targets(None, extra={"memory": m, "context": c})
    top1 = last.argmax(-1)
    outcome = [
        "memory" if t == a else "context" if t == b else "other"
        for t, a, b in zip(top1.tolist(), m.tolist(), c.tolist(), strict=True)
    ]
    score = {name: readout(get_metric(name), targets).score_vocab(last)
             for name in ("memory_context_diff", "memory_prob", "context_prob")}
    return ConflictRates(
        [it.fact.relation for it in items],
        [it.fact.subject for it in items],
        outcome,
        [model.tokenizer.decode([t]) for t in top1.tolist()],
        score["memory_context_diff"],
        score["memory_prob"],
        score["context_prob"],
    )
