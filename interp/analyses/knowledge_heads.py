"""Memory and context heads (Jin et al. 2024): each head's direct effect on
logit(o_m) - logit(o_c), by path patching the head to the logits at the last position only.

See `interp.analyses.knowledge` for the method; this module holds the sweep
(`path_patch_last_position`, on the shared engine `interp.analyses.sweep`), the per-prompt
result `HeadEffects` and `memory_context_heads`, which runs the sweep over every batch.

Speed: with every head except the sender frozen, positions no longer exchange information, so
only the last position's residual stream needs recomputing: each sender costs one
one-position forward from its layer (equal to
`interp.analyses.path_patching.path_patch_senders` to the logits, checked in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyses.sweep import (
    ProgressFn,
    freeze_hook,
    head_sender_hook,
    over_batches,
    resume,
    sweep,
)
from interp.core.errors import DatasetError, InterpError
from interp.core.hooks import caching_hooks
from interp.core.metrics import Targets, get_metric, readout
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Head, Tensor
from interp.data.pairs import PairBatch, TokenizedPairs

__all__ = ["HeadEffects", "memory_context_heads", "path_patch_last_position"]


@torch.no_grad()
def path_patch_last_position(
    model: HookedModel,
    pb: PairBatch,
    senders: Sequence[Head] | None = None,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[Float[Tensor, "sender prompt"], Float[Tensor, " prompt"], Float[Tensor, " prompt"]]:
    """Path patching from each sender head to the logits (MLPs recomputed), computing only the
    last position. Returns (patched metric (sender, prompt), clean metric (prompt,), corrupt
    metric (prompt,)); the metric is `memory_context_diff`, logit(answer = o_m) -
    logit(distractor = o_c) at the last position.

    Exact: with all heads but the sender frozen at their clean outputs, the last position's
    residual depends only on its own values, the sender's output there and the MLPs on it."""
    L, H = model.spec.n_layers, model.spec.n_heads
    senders = [(layer, h) for layer in range(L) for h in range(H)] if senders is None else list(senders)
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
    rd = readout(get_metric("memory_context_diff"), Targets(a, d, {"memory": a, "context": d}))
    start = T - 1
    clean_final = resume(model, inputs, 0, 1, [], start=start)
    clean_m = rd.score(model.unembed(clean_final[:, -1], rd.columns)).float().cpu()
    corrupt_m = rd.score_vocab(corrupt_logits[:, -1].float()).cpu()

    def run_chunk(layer: int, _start: int, chunk: list[int]) -> Tensor:
        k = len(chunk)
        heads = [senders[i][1] for i in chunk]
        hooks = [head_sender_hook(layer, heads, n, corrupt_z[z_sites[layer]][:, start:])]
        hooks += [(z_sites[lay], freeze_hook(clean_z[z_sites[lay]][:, start:], k)) for lay in range(layer + 1, L)]
        return resume(model, inputs, layer, k, hooks, start=start)

    out = sweep(model, n, [(layer, start) for layer, _ in senders], run_chunk, rd, batch_size=batch_size,
                progress=progress)
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
    if not pairs.batches:
        raise DatasetError("memory/context heads need at least one conflict pair; the dataset is empty")
    L, H = model.spec.n_layers, model.spec.n_heads
    n = pairs.n
    effects = torch.zeros(L * H, n)
    clean_m, corrupt_m = torch.zeros(n), torch.zeros(n)

    def per_batch(pb: PairBatch, prog: ProgressFn):
        return path_patch_last_position(model, pb, batch_size=batch_size, progress=prog)

    for r in over_batches(pairs.by_length().batches, per_batch, L * H, progress):
        effects[:, r.pb.indices] = r.clean.unsqueeze(0) - r.values
        clean_m[r.pb.indices], corrupt_m[r.pb.indices] = r.clean, r.corrupt
    return HeadEffects(effects.view(L, H, n), list(relations), clean_m, corrupt_m)
