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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.hooks import caching_hooks
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.data.knowledge import (
    ConflictItem,
    Fact,
    FactTable,
    answer_token,
    closed_book_prompt,
)
from interp.data.pairs import PairBatch, TokenizedPairs

ProgressFn = Callable[[int, int], None]
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
        raise InterpError("no conflict items given")
    last = last_logits(model, [it.prompt for it in items])
    r = torch.arange(len(items))
    m = torch.tensor([it.memory_token for it in items])
    c = torch.tensor([it.context_token for it in items])
    top1 = last.argmax(-1)
    outcome = [
        "memory" if t == a else "context" if t == b else "other"
        for t, a, b in zip(top1.tolist(), m.tolist(), c.tolist(), strict=True)
    ]
    probs = last.softmax(-1)
    return ConflictRates(
        [it.fact.relation for it in items],
        [it.fact.subject for it in items],
        outcome,
        [model.tokenizer.decode([t]) for t in top1.tolist()],
        last[r, m] - last[r, c],
        probs[r, m],
        probs[r, c],
    )


# ------------------------------------------------------------------ path patching, last position


def _freeze_last(value: torch.Tensor, copies: int):
    frozen = value.repeat(copies, *([1] * (value.ndim - 1)))

    def fn(t: torch.Tensor, _: Site) -> torch.Tensor:
        return frozen.to(t.dtype)

    return fn


def _sender_last(heads: list[int], n: int, corrupt_last: torch.Tensor):
    def fn(t: torch.Tensor, _: Site) -> torch.Tensor:
        t = t.clone()  # (copies * n, 1, head, d_head)
        for j, h in enumerate(heads):
            t[j * n : (j + 1) * n, :, h] = corrupt_last[:, :, h].to(t.dtype)
        return t

    return fn


@torch.no_grad()
def path_patch_last_position(
    model: HookedModel,
    pb: PairBatch,
    senders: Sequence[tuple[int, int]] | None = None,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path patching from each sender head to the logits (MLPs recomputed), computing only the
    last position. Returns (patched metric (sender, prompt), clean metric (prompt,), corrupt
    metric (prompt,)); the metric is logit(answer) - logit(distractor) at the last position.

    Exact: with all heads but the sender frozen at their clean outputs, the last position's
    residual depends only on its own values, the sender's output there and the MLPs on it."""
    L, H = model.spec.n_layers, model.spec.n_heads
    senders = (
        [(layer, h) for layer in range(L) for h in range(H)] if senders is None else list(senders)
    )
    dev = model.device
    clean, corrupt = pb.clean.to(dev), pb.corrupt.to(dev)
    n, T = clean.shape
    z_sites = [Site("z", layer=layer) for layer in range(L)]
    clean_z: dict[Site, torch.Tensor] = {}
    with model.hooks(caching_hooks(z_sites, clean_z)):
        inputs = model.capture_block_inputs(clean)
    if not inputs.resumes_at_position:
        raise InterpError(f"backend {model.backend!r} cannot resume a forward at a position")
    corrupt_logits, corrupt_z = model.run_with_cache(corrupt, z_sites)
    a, d = pb.answer_ids.to(dev), pb.distractor_ids.to(dev)
    r = torch.arange(n, device=dev)
    cols = torch.cat([a, d])

    def metric(final_last: torch.Tensor, copies: int) -> torch.Tensor:
        logits = model.unembed(final_last, cols)  # (copies * n, 2n)
        rows = torch.arange(copies * n, device=dev)
        idx = r.repeat(copies)
        return (logits[rows, idx] - logits[rows, idx + n]).float()

    start = T - 1
    clean_final = model.forward_from(0, inputs.resid_pre[0][:, start:], inputs, start_pos=start)
    clean_m = metric(clean_final[:, -1], 1).cpu()
    cl = corrupt_logits[:, -1].float()
    corrupt_m = (cl[r, a] - cl[r, d]).cpu()

    out = torch.full((len(senders), n), float("nan"))
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(senders):
        by_layer.setdefault(layer, []).append(i)
    done = 0
    for layer in sorted(by_layer):
        idxs = by_layer[layer]
        for first in range(0, len(idxs), batch_size):
            chunk = idxs[first : first + batch_size]
            k = len(chunk)
            heads = [senders[i][1] for i in chunk]
            hooks = [(z_sites[layer], _sender_last(heads, n, corrupt_z[z_sites[layer]][:, start:]))]
            hooks += [
                (z_sites[lay], _freeze_last(clean_z[z_sites[lay]][:, start:], k))
                for lay in range(layer + 1, L)
            ]
            x = inputs.resid_pre[layer][:, start:].repeat(k, 1, 1)
            with model.hooks(hooks):
                final = model.forward_from(layer, x, inputs, start_pos=start)
            out[chunk] = metric(final[:, -1], k).view(k, n).cpu()
            done += k
            if progress:
                progress(done, len(senders))
    return out, clean_m, corrupt_m


# ---------------------------------------------------------------------------- head effects


@dataclass(frozen=True)
class HeadEffects:
    """Per-prompt direct effects of each head on logit(o_m) - logit(o_c):
    effect = m(clean) - m(head path-patched from the corrupt prompt); > 0 memory, < 0 context."""

    effects: torch.Tensor  # (layer, head, prompt)
    relations: list[str]  # per prompt
    clean_metric: torch.Tensor  # (prompt,)
    corrupt_metric: torch.Tensor  # (prompt,)
    labels: dict[str, list] = field(default_factory=dict)

    @property
    def mean(self) -> torch.Tensor:
        return self.effects.mean(-1)

    @property
    def sign_consistency(self) -> torch.Tensor:
        """(layer, head): share of prompts whose effect has the sign of the mean effect."""
        sign = torch.sign(self.mean).unsqueeze(-1)
        return (torch.sign(self.effects) == sign).float().mean(-1)

    @property
    def frac_positive(self) -> torch.Tensor:
        return (self.effects > 0).float().mean(-1)

    def to_frame(self) -> pd.DataFrame:
        L, H, _ = self.effects.shape
        mean, std = (
            self.mean,
            self.effects.std(-1) if self.effects.shape[-1] > 1 else torch.zeros(L, H),
        )
        cons, pos = self.sign_consistency, self.frac_positive
        rows = [
            {
                "layer": layer,
                "head": h,
                "label": f"L{layer}H{h}",
                "effect": float(mean[layer, h]),
                "std": float(std[layer, h]),
                "sign_consistency": float(cons[layer, h]),
                "frac_positive": float(pos[layer, h]),
                "kind": "memory" if mean[layer, h] > 0 else "context",
            }
            for layer in range(L)
            for h in range(H)
        ]
        return pd.DataFrame(rows)

    def per_prompt_frame(self) -> pd.DataFrame:
        L, H, n = self.effects.shape
        idx = pd.MultiIndex.from_product(
            [range(L), range(H), range(n)], names=["layer", "head", "prompt"]
        )
        df = pd.DataFrame({"effect": self.effects.reshape(-1).numpy()}, index=idx).reset_index()
        df["relation"] = [self.relations[p] for p in df["prompt"]]
        return df

    def by_relation_frame(self) -> pd.DataFrame:
        """Mean effect per (layer, head, relation), and whether it has the overall mean's sign."""
        df = self.per_prompt_frame()
        g = df.groupby(["layer", "head", "relation"], sort=False)["effect"].mean().reset_index()
        overall = self.to_frame().set_index(["layer", "head"])["effect"]
        g["same_sign_as_overall"] = [
            bool((e > 0) == (overall[(la, h)] > 0))
            for la, h, e in zip(g["layer"], g["head"], g["effect"], strict=True)
        ]
        return g

    def top_memory(self, k: int) -> pd.DataFrame:
        df = self.to_frame()
        return df[df["effect"] > 0].nlargest(k, "effect").reset_index(drop=True)

    def top_context(self, k: int) -> pd.DataFrame:
        df = self.to_frame()
        return df[df["effect"] < 0].nsmallest(k, "effect").reset_index(drop=True)


def memory_context_heads(
    model: HookedModel,
    pairs: TokenizedPairs,
    relations: Sequence[str],
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> HeadEffects:
    """Path-patch every head to the logits on every conflict pair (`conflict_pairs`, answer =
    o_m, distractor = o_c); `relations[i]` is pair i's relation (for per-relation tables)."""
    L, H = model.spec.n_layers, model.spec.n_heads
    n = pairs.n
    effects = torch.zeros(L * H, n)
    clean_m, corrupt_m = torch.zeros(n), torch.zeros(n)
    batches = pairs.by_length().batches
    for bi, pb in enumerate(batches):

        def prog(done: int, total: int, bi: int = bi) -> None:
            if progress:
                progress(bi * total + done, total * len(batches))

        patched, clean, corrupt = path_patch_last_position(
            model, pb, batch_size=batch_size, progress=prog
        )
        effects[:, pb.indices] = clean.unsqueeze(0) - patched
        clean_m[pb.indices], corrupt_m[pb.indices] = clean, corrupt
    return HeadEffects(effects.view(L, H, n), list(relations), clean_m, corrupt_m)
