"""Path patching (Wang et al. 2022, IOI; as used by Merullo et al. 2023 for circuit reuse).

The effect of a sender head s on a set of receivers R through direct paths only:

- Pass 1: run the clean prompt with every head's output frozen to its clean value except s,
  which takes its value on the corrupt prompt. MLPs are recomputed (default, as in Wang et al.)
  or frozen too (`freeze_mlps=True`). Record the receivers' inputs.
- Pass 2: run the clean prompt again and patch only the receivers' inputs with the recorded
  values; measure the metric (logit difference at the last position by default).

Receivers are the logits (the final residual is the input: pass 2 is then pass 1's output)
or a head's query, key or value input (`Receiver("q", layer=9, head=6)`). Grouped-query
attention is handled per query head: a key/value receiver changes only that query head's
view of its key/value group. Its attention scores are recomputed exactly from the current
queries and the recorded keys (k receivers), and its output from the current pattern and the
recorded values (v receivers); the other heads sharing the group keep the clean keys/values.

Results use the patching convention: normalised (m - m_corrupt) / (m_clean - m_corrupt), so 1
means the path carries nothing and lower values mean the sender matters through R. Senders at
or after the earliest head receiver's layer have no direct path and are NaN.

    res = path_patching(model, pairs, [Receiver("logits")])          # name movers
    res = path_patching(model, pairs, [Receiver("q", 9, 6), Receiver("q", 9, 9)])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from interp.analyses import sweep as engine
from interp.analyses.patching import baseline_metrics, baseline_shard, check_pairs, pair_readout
from interp.analyses.results import PatchingResult
from interp.analyses.sweep import (
    ProgressFn,
    freeze_hook,
    head_sender_hook,
    over_batches,
    prompt_mean,
    resume,
    sweep,
)
from interp.core.attention import check_recompute, recompute_scores
from interp.core.errors import InterpError, UnsupportedError
from interp.core.execution import Executor, Shard
from interp.core.hooks import caching_hooks
from interp.core.metrics import Metric, as_metric, get_metric
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.core.types import Float, Head, Tensor
from interp.data.pairs import PairBatch, TokenizedPairs

RECEIVER_INPUTS = ("logits", "q", "k", "v")


@dataclass(frozen=True)
class Receiver:
    input: str  # "logits" | "q" | "k" | "v"
    layer: int | None = None
    head: int | None = None

    def __post_init__(self) -> None:
        if self.input not in RECEIVER_INPUTS:
            raise InterpError(f"unknown receiver input {self.input!r}; allowed: {', '.join(RECEIVER_INPUTS)}")
        if self.input == "logits" and (self.layer is not None or self.head is not None):
            raise InterpError("the logits receiver takes no layer or head")
        if self.input != "logits" and (self.layer is None or self.head is None):
            raise InterpError(f"a {self.input!r} receiver needs a layer and a head")

    def __str__(self) -> str:
        return "logits" if self.input == "logits" else f"L{self.layer}H{self.head}.{self.input}"

    @classmethod
    def parse(cls, text: str) -> Receiver:
        """'logits' or 'L<layer>H<head>.<q|k|v>' (e.g. 'L9H6.q')."""
        import re

        text = text.strip()
        if text == "logits":
            return cls("logits")
        m = re.fullmatch(r"L(\d+)H(\d+)\.([qkv])", text)
        if not m:
            raise InterpError(f"cannot parse receiver {text!r}; expected 'logits' or e.g. 'L9H6.q'")
        return cls(m.group(3), int(m.group(1)), int(m.group(2)))


def _check(model: HookedModel, receivers: Sequence[Receiver]) -> None:
    if not receivers:
        raise InterpError("no receivers given")
    kinds = {r.input == "logits" for r in receivers}
    if len(kinds) > 1:
        raise InterpError("mix of logits and head receivers; path-patch them in separate calls")
    for r in receivers:
        if r.layer is not None and not (0 <= r.layer < model.spec.n_layers and 0 <= r.head < model.spec.n_heads):  # type: ignore[operator]
            raise InterpError(f"receiver {r} is outside the model "
                              f"({model.spec.n_layers} layers, {model.spec.n_heads} heads)")


@torch.no_grad()
def path_patch_senders(
    model: HookedModel,
    pb: PairBatch,
    senders: Sequence[Head],
    receivers: Sequence[Receiver],
    *,
    freeze_mlps: bool = False,
    metric: str | Metric = "logit_diff",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> Float[Tensor, "sender prompt"]:
    """Per-prompt metric after path patching each sender (layer, head): (sender, prompt).
    Senders with no direct path to the receivers give NaN."""
    _check(model, receivers)
    metric = as_metric(metric)
    L = model.spec.n_layers
    dev = model.device
    clean, corrupt = pb.clean.to(dev), pb.corrupt.to(dev)
    n = clean.shape[0]
    to_logits = receivers[0].input == "logits"
    r_layers = sorted({r.layer for r in receivers if r.layer is not None})
    first_r = r_layers[0] if r_layers else L

    sender_layers = sorted({layer for layer, _ in senders})
    freeze_sites = [Site("z", layer=l) for l in range(L)]  # noqa: E741
    if freeze_mlps:
        freeze_sites += [Site("mlp_out", layer=l) for l in range(L)]  # noqa: E741
    clean_acts: dict[Site, torch.Tensor] = {}
    with model.hooks(caching_hooks(freeze_sites, clean_acts)):
        inputs = model.capture_block_inputs(clean)
    _, corrupt_z = model.run_with_cache(corrupt, [Site("z", layer=l) for l in sender_layers])  # noqa: E741
    record_sites = _record_sites(model, receivers)

    def run_chunk(layer: int, _start: int, chunk: list[int]) -> Tensor:
        k = len(chunk)
        # -- pass 1: sender corrupt, every later head (and optionally MLP) frozen clean --
        hooks = [head_sender_hook(layer, [senders[i][1] for i in chunk], n, corrupt_z[Site("z", layer=layer)])]
        hooks += [(s, freeze_hook(clean_acts[s], k)) for s in freeze_sites
                  if s.layer > layer or (s.component == "mlp_out" and s.layer == layer)]  # type: ignore[operator]
        recorded: dict[Site, torch.Tensor] = {}
        hooks += caching_hooks(record_sites, recorded)
        final = resume(model, inputs, layer, k, hooks, end_layer=None if to_logits else r_layers[-1] + 1)
        if to_logits:
            return final
        # -- pass 2: clean run, only the receivers' inputs patched --
        return resume(model, inputs, first_r, k, _receiver_hooks(model, receivers, recorded, n))

    keys = [(layer, 0) if layer < first_r else None for layer, _ in senders]
    return sweep(model, n, keys, run_chunk, pair_readout(model, pb, metric), batch_size=batch_size,
                 progress=progress)


def _input_site(model: HookedModel, kind: str, layer: int) -> Site:
    """Where a receiver's input is recorded and written. Queries and keys are taken after the
    model's q/k norms and rotation where the backend exposes that (OLMo 2 normalises q and k
    across all heads, so only the post-norm value is one head's own); otherwise before it
    (rotation and per-head norms act on each head alone, so patching there is the same)."""
    comp = {"q": "q_rot", "k": "k_rot", "v": "v"}[kind]
    if comp != "v" and not model.supports(comp):
        comp = kind
    return Site(comp, layer=layer)


def _grouped(model: HookedModel) -> bool:
    return model.spec.n_kv_heads != model.spec.n_heads


def _record_sites(model: HookedModel, receivers: Sequence[Receiver]) -> list[Site]:
    return sorted({_input_site(model, r.input, r.layer) for r in receivers if r.input != "logits"})  # type: ignore[arg-type]


def _head_patch(heads: list[int], rec: torch.Tensor):
    def fn(t, _s):
        t = t.clone()
        t[:, :, heads] = rec[:, :, heads].to(t.dtype)
        return t

    return fn


def _receiver_hooks(model: HookedModel, receivers: Sequence[Receiver], recorded: dict[Site, torch.Tensor], n: int):
    """Pass-2 hooks: each receiver head sees the recorded input; nothing else changes.

    Queries, and keys/values where each query head has its own (no grouped-query attention),
    are patched in place, so the model's own attention scores them. Under grouped-query
    attention a key/value receiver must not change the other heads of its group: its scores
    are recomputed from the current queries and the recorded keys (`interp.core.attention`:
    the model's scale, softcap and mask, checked against the model's own scores first), and
    its output from the current pattern and the recorded values (checked likewise)."""
    group = model.spec.n_heads // model.spec.n_kv_heads
    hooks: list[tuple[Site, Callable]] = []
    for layer in sorted({r.layer for r in receivers}):  # type: ignore[type-var]
        here = [r for r in receivers if r.layer == layer]
        heads = {kind: [r.head for r in here if r.input == kind] for kind in ("q", "k", "v")}
        for kind in ("q", "k", "v"):
            if heads[kind] and (kind == "q" or not _grouped(model)):
                site = _input_site(model, kind, layer)
                hooks.append((site, _head_patch(heads[kind], recorded[site])))
        if _grouped(model) and heads["k"]:
            hooks += _grouped_key_hooks(model, layer, heads["k"], recorded[_input_site(model, "k", layer)], group)
        if _grouped(model) and heads["v"]:
            hooks += _grouped_value_hooks(model, layer, heads["v"], recorded[Site("v", layer=layer)], group)
    return hooks


def _keeper(current: dict[str, torch.Tensor]):
    """keep(name): a hook that stores its tensor as `current[name]` (this forward's value)."""

    def keep(name: str):
        def fn(t, _s):
            current[name] = t

        return fn

    return keep


def _grouped_key_hooks(model: HookedModel, layer: int, k_heads: list[int], rec_k: torch.Tensor, group: int):
    for comp in ("q_rot", "k_rot", "attn_scores"):
        if not model.supports(comp):
            raise UnsupportedError(
                f"key receivers under grouped-query attention on {model.spec.architecture} need the rotated "
                f"queries/keys and the attention scores, but site {comp!r} is not supported there (see "
                "`interp check`); query and value receivers work")
    scale, cap = model.attention_scale(layer), model.attention_softcap(layer)
    current: dict[str, torch.Tensor] = {}
    keep = _keeper(current)

    def scores_hook(t, _s):
        q, k_now = current["q_rot"], current["k_rot"]  # (batch, pos, head | kv_head, d) of this forward
        h0 = k_heads[0]
        check_recompute(q[:, :, h0], k_now[:, :, h0 // group], t[:, h0], scale=scale, softcap=cap,
                        what=f"{model.spec.architecture} layer {layer}")
        t = t.clone()
        for h in k_heads:
            t[:, h] = recompute_scores(q[:, :, h], rec_k[:, :, h // group], t[:, h], scale=scale, softcap=cap)
        return t

    return [(Site("q_rot", layer=layer), keep("q_rot")), (Site("k_rot", layer=layer), keep("k_rot")),
            (Site("attn_scores", layer=layer), scores_hook)]


def _grouped_value_hooks(model: HookedModel, layer: int, v_heads: list[int], rec_v: torch.Tensor, group: int):
    for comp in ("pattern", "v", "z"):
        if not model.supports(comp):
            raise UnsupportedError(
                f"value receivers under grouped-query attention on {model.spec.architecture} need site "
                f"{comp!r}, which is not supported there (see `interp check`)")
    current: dict[str, torch.Tensor] = {}
    keep = _keeper(current)

    def z_hook(t, _s):
        pattern, v_now = current["pattern"], current["v"]  # (batch, head, q, k), (batch, pos, kv, d)
        h0 = v_heads[0]
        mine = torch.einsum("bqk,bkd->bqd", pattern[:, h0].float(), v_now[:, :, h0 // group].float())
        err = float((mine - t[:, :, h0].float()).abs().max())
        if err > 1e-4 * max(1.0, float(t[:, :, h0].float().abs().max())):
            raise UnsupportedError(
                f"value receivers on {model.spec.architecture}: a head's output is not its pattern times "
                f"its values here (max deviation {err:.2e}), so recorded values cannot be substituted")
        t = t.clone()
        for h in v_heads:
            t[:, :, h] = torch.einsum(
                "bqk,bkd->bqd", pattern[:, h], rec_v[:, :, h // group].to(pattern.dtype)).to(t.dtype)
        return t

    return [(Site("v", layer=layer), keep("v")), (Site("pattern", layer=layer), keep("pattern")),
            (Site("z", layer=layer), z_hook)]


def path_patching(
    model: HookedModel,
    pairs: TokenizedPairs,
    receivers: Sequence[Receiver],
    *,
    freeze_mlps: bool = False,
    metric: str = "logit_diff",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
) -> PatchingResult:
    """Path-patch every head as a sender to `receivers`: a (layer, head) map. With an
    `executor`, each batch's senders run as shards of one sender layer (keys
    `path_patching-b<batch>-L<layer>`, `...-baseline`); same numbers."""
    m = get_metric(metric)
    check_pairs(pairs, "path patching")
    L, H = model.spec.n_layers, model.spec.n_heads
    senders = [(layer, h) for layer in range(L) for h in range(H)]
    batches = pairs.by_length().batches
    if executor is not None:
        _check(model, receivers)
        # Senders at or after the first head receiver have no direct path: in no shard, NaN.
        first_r = min((r.layer for r in receivers if r.layer is not None), default=L)
        layers = [layer if layer < first_r else None for layer, _ in senders]
        plans = [engine.BatchPlan(pb, len(senders), Shard(f"path_patching-b{bi}-baseline", baseline_shard, (pb, m)), [
            (Shard(f"path_patching-b{bi}-L{la}", path_shard,
                   (pb, [senders[i] for i in idxs], tuple(receivers), freeze_mlps, m, batch_size)), idxs)
            for la, idxs in engine.layer_groups(layers)]) for bi, pb in enumerate(batches)]
        vals, clean, corrupt, n = prompt_mean(engine.over_shards(executor, plans, progress))
    else:
        def per_batch(pb: PairBatch, prog: ProgressFn):
            vals = path_patch_senders(model, pb, senders, receivers, freeze_mlps=freeze_mlps, metric=m,
                                      batch_size=batch_size, progress=prog)
            return (vals, *baseline_metrics(model, pb, m))

        vals, clean, corrupt, n = prompt_mean(over_batches(batches, per_batch, len(senders), progress))
    return PatchingResult(
        "path_patching", "noising", metric, ("layer", "head"), vals.view(L, H), clean, corrupt, n,
        labels={"receivers": [str(r) for r in receivers], "freeze_mlps": [freeze_mlps]},
    )


def path_shard(model: HookedModel, payload: tuple) -> Float[Tensor, "sender prompt"]:
    """A shard's task: `path_patch_senders` on (pair batch, senders, receivers, freeze_mlps,
    metric, batch size)."""
    pb, senders, receivers, freeze_mlps, metric, batch_size = payload
    return path_patch_senders(model, pb, senders, list(receivers), freeze_mlps=freeze_mlps, metric=metric,
                              batch_size=batch_size)
