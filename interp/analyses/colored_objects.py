"""Colored Objects accuracy and the attention intervention of Merullo et al. (2023).

Accuracy is measured among the options: the answer is right when the answer colour has the
highest logit of the three colours on the desk (chance: 1/3).

Intervention: Merullo et al. find that the IOI circuit's inhibition heads are reused; steering
a few of them to attend to the wrong options (so that the mover heads are inhibited from
copying those) raises accuracy. Here the chosen heads' attention from the last position is
set uniformly over the token positions of the two wrong colours, for all later processing of
that forward; accuracy is compared before and after, and against the same number of random
heads from the same layers (a control).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Head
from interp.data.pairs import PairDataset, TokenizedPairs


@dataclass(frozen=True)
class OptionAccuracy:
    accuracy: float
    n: int
    per_prompt: list[bool]


@torch.no_grad()
def option_accuracy(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset,
                    heads: list[Head] | None = None) -> OptionAccuracy:
    """Share of prompts whose answer colour beats the other options; with `heads`, under the
    attention intervention on those heads."""
    correct = [False] * len(dataset)
    for pb in pairs.by_length().batches:
        metas = [dataset.pairs[i].meta for i in pb.indices]
        hooks = _intervention_hooks(heads or [], metas, pb.clean.shape[1]) if heads else []
        with model.hooks(hooks):
            last = model.forward(pb.clean.to(model.device))[:, -1].cpu()
        for row, (i, meta) in enumerate(zip(pb.indices, metas, strict=True)):
            opts = last[row, meta["option_ids"]]
            correct[i] = int(opts.argmax()) == meta["query"]
    return OptionAccuracy(sum(correct) / len(correct), len(correct), correct)


def _intervention_hooks(heads: list[Head], metas: list[dict], T: int):
    target = torch.zeros(len(metas), T)
    for row, meta in enumerate(metas):
        shift = T - 1 - meta["positions"]["END"]  # a prepended <bos> moves every position
        wrong = [p + shift for j, p in enumerate(meta["colour_positions"]) if j != meta["query"]]
        target[row, wrong] = 1.0 / len(wrong)
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    hooks = []
    for layer, hs in by_layer.items():
        def fn(t, _s, hs=hs):
            t = t.clone()
            t[:, hs, -1, :] = target[:, None, :].to(t.dtype).to(t.device)
            return t

        hooks.append((Site("pattern", layer=layer), fn))
    return hooks


def random_heads_like(heads: list[Head], n_heads: int, exclude: set[Head], seed: int) -> list[Head]:
    """Random heads with the same layers as `heads` (one per chosen head), none in `exclude`."""
    rng = random.Random(seed)
    out: list[Head] = []
    for layer, _ in heads:
        choices = [(layer, h) for h in range(n_heads) if (layer, h) not in exclude and (layer, h) not in out]
        if choices:
            out.append(rng.choice(choices))
    return out


@dataclass(frozen=True)
class InterventionResult:
    heads: list[Head]
    before: float
    after: float
    random_controls: list[float]
    n: int

    def to_frame(self):
        import pandas as pd

        rows = [{"condition": "no intervention", "accuracy": self.before},
                {"condition": f"intervene on {', '.join(f'L{a}H{b}' for a, b in self.heads)}", "accuracy": self.after}]
        rows += [{"condition": f"random heads (seed {i})", "accuracy": a} for i, a in enumerate(self.random_controls)]
        return pd.DataFrame(rows)


def intervention_experiment(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset, heads: list[Head],
                            *, n_random: int = 3, seed: int = 0) -> InterventionResult:
    before = option_accuracy(model, pairs, dataset).accuracy
    after = option_accuracy(model, pairs, dataset, heads).accuracy
    controls = []
    for i in range(n_random):
        rand = random_heads_like(heads, model.spec.n_heads, set(heads), seed + i)
        controls.append(option_accuracy(model, pairs, dataset, rand).accuracy)
    return InterventionResult(list(heads), before, after, controls, len(dataset))
