"""Causal test of retrieval heads (Wu et al. 2024, section 4): needle-in-a-haystack accuracy with
the top-K retrieval heads masked, against K random non-retrieval heads.

The random heads have the same layer distribution as the masked retrieval heads (for each
masked head, a random head of the same layer that is not a retrieval head; where a layer has
none left, the nearest layer that does), drawn anew for each seed, so the spread over seeds
shows how much any K heads of those layers matter. The ablation type is a parameter
(`interp.analyses.ablation`): ``uniform`` (the reference: zero query, uniform attention),
``zero`` (the head writes nothing) or ``mean`` (the head writes its mean output), so a user can
see how much the conclusion depends on it.

    res = masking_test(model, trials, top_heads, exclude=all_retrieval_heads, modes=("uniform",))
    res.summary()     # mode, baseline, retrieval-masked, random mean/std/min/max accuracy
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.ablation import ABLATION_MODES, ablated_heads, matched_random_heads
from interp.analyses.retrieval import KEEP_RECALL, decode_greedy, stop_token_ids
from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.types import Head
from interp.data.needles import NeedleTrial, rouge1_recall

__all__ = ["MaskingResult", "masking_test", "niah_answers"]


@torch.no_grad()
def niah_answers(model: HookedModel, trials: Sequence[NeedleTrial], *, max_new_tokens: int = 32,
                 chunk_size: int = 512, progress: Callable[[], None] | None = None) -> list[tuple[str, float]]:
    """(response, ROUGE-1 recall) per trial, greedy, with whatever hooks are active."""
    stops = stop_token_ids(model)
    out = []
    for trial in trials:
        ids = decode_greedy(model, trial, max_new_tokens=max_new_tokens, chunk_size=chunk_size, stops=stops)
        response = model.tokenizer.decode(list(ids), skip_special_tokens=True).strip()
        out.append((response, rouge1_recall(trial.needle.answer, response)))
        if progress is not None:
            progress()
    return out


@dataclass(frozen=True)
class MaskingResult:
    """`conditions`: one row per (condition, mode, seed): the masked heads and NIAH accuracy
    (share of trials with ROUGE-1 recall > 0.5) and mean recall. `trials`: one row per trial
    and condition."""

    conditions: pd.DataFrame
    trials: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Per ablation mode: unmasked, retrieval-masked and random-masked accuracy (mean, std,
        min, max over seeds)."""
        c = self.conditions
        base = float(c[c.condition == "none"]["accuracy"].iloc[0])
        rows = []
        for mode in [m for m in c["mode"].unique() if m != "-"]:
            ret = c[(c.condition == "retrieval") & (c["mode"] == mode)]
            rnd = c[(c.condition == "random") & (c["mode"] == mode)]["accuracy"]
            rows.append({
                "mode": mode, "k": int(ret["k"].iloc[0]), "unmasked": base,
                "retrieval_masked": float(ret["accuracy"].iloc[0]),
                "random_mean": float(rnd.mean()), "random_std": float(rnd.std(ddof=1)) if len(rnd) > 1 else 0.0,
                "random_min": float(rnd.min()), "random_max": float(rnd.max()), "n_seeds": int(len(rnd)),
                "n_trials": int(ret["n_trials"].iloc[0]),
                # the retrieval heads matter beyond "any K heads of these layers" only if masking
                # them hurts more than every random draw did
                "below_all_random": bool(float(ret["accuracy"].iloc[0]) < float(rnd.min())),
            })
        return pd.DataFrame(rows)


def _check_masking(trials: Sequence[NeedleTrial], heads: Sequence[Head], modes: Sequence[str],
                   means: torch.Tensor | None) -> None:
    if not trials:
        raise InterpError("no needle trials for the masking test")
    if not heads:
        raise InterpError("no heads to mask: there are no retrieval heads to test (lower the threshold or set k)")
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad:
        raise InterpError(f"unknown ablation mode(s) {', '.join(bad)}; allowed: {', '.join(ABLATION_MODES)}")
    if "mean" in modes and means is None:
        raise InterpError("mode 'mean' needs means (head_means over the trials' prompts)")


def _plan(model: HookedModel, heads: list[Head], exclude: set[Head], modes: Sequence[str],
          seeds: Sequence[int]) -> list[tuple[str, str, int | None, list[Head]]]:
    """(condition, mode, seed, heads) of every run: unmasked, then per mode the retrieval heads
    and one matched random draw per seed."""
    L, H = model.spec.n_layers, model.spec.n_heads
    plan: list[tuple[str, str, int | None, list[Head]]] = [("none", "-", None, [])]
    for mode in modes:
        plan.append(("retrieval", mode, None, heads))
        for seed in seeds:
            plan.append(("random", mode, seed, matched_random_heads(L, H, heads, exclude, seed)))
    return plan


def masking_test(
    model: HookedModel,
    trials: Sequence[NeedleTrial],
    heads: Sequence[Head],
    *,
    exclude: set[Head] | None = None,
    modes: Sequence[str] = ("uniform",),
    seeds: Sequence[int] = (0, 1, 2),
    means: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    chunk_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> MaskingResult:
    """NIAH accuracy unmasked, with `heads` masked, and with matched random heads (per seed),
    for each ablation mode. `exclude` (default: `heads`) are never drawn as random heads; pass
    every retrieval head so the control is made of non-retrieval heads. Mode ``mean`` needs
    `means` from `interp.analyses.ablation.head_means`."""
    _check_masking(trials, heads, modes, means)
    heads = [(int(a), int(b)) for a, b in heads]
    exclude = set(heads) if exclude is None else set(exclude) | set(heads)
    plan = _plan(model, heads, exclude, modes, seeds)
    total, done = len(plan) * len(trials), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    cond_rows, trial_rows = [], []
    for condition, mode, seed, chosen in plan:
        if chosen:
            with ablated_heads(model, chosen, mode=mode, means=means if mode == "mean" else None):
                answers = niah_answers(model, trials, max_new_tokens=max_new_tokens, chunk_size=chunk_size,
                                       progress=tick)
        else:
            answers = niah_answers(model, trials, max_new_tokens=max_new_tokens, chunk_size=chunk_size, progress=tick)
        correct = [r > KEEP_RECALL for _, r in answers]
        cond_rows.append({
            "condition": condition, "mode": mode, "seed": -1 if seed is None else seed, "k": len(chosen),
            "heads": " ".join(f"L{a}H{b}" for a, b in chosen), "accuracy": sum(correct) / len(correct),
            "mean_recall": sum(r for _, r in answers) / len(answers), "n_trials": len(trials),
        })
        for i, ((response, recall), trial) in enumerate(zip(answers, trials, strict=True)):
            trial_rows.append({
                "condition": condition, "mode": mode, "seed": -1 if seed is None else seed, "trial": i,
                "context_length": trial.context_length, "depth": trial.depth, "needle_index": trial.needle_index,
                "response": response, "recall": recall, "correct": recall > KEEP_RECALL,
            })
    return MaskingResult(pd.DataFrame(cond_rows), pd.DataFrame(trial_rows))
