"""`interp check MODEL`: is every analysis exact on this model? One verdict per analysis.

The conformance suite proves each family exact against independent raw computations; this
command gives a user the same confidence for *their* checkpoint in about a minute, on small
seeded random inputs, with checks that need no reference implementation:

- the output head: the final residual through the model's own norm, lm_head and tail
  reproduces the forward's logits (checked when the model is wrapped);
- parity: the hooked model's logits equal a freshly loaded Hugging Face copy's;
- sites: every hook component is reached at every layer and a write to it changes the logits;
- identities: with corrupt == clean, every patching sweep, path-patching receiver (logits, q,
  k, v), AtP and AtP* effect must give exactly the clean behaviour; and a resumed, batched
  sweep must equal a plain full forward with the same patch on real corruptions;
- DLA: its parts sum to the logit difference; the verdict states its approximations and the
  measured remainder;
- key/value-cached forwards (chunked prefill, the retrieval scorer's patterns) equal one full
  forward, on a context longer than the model's shortest sliding window.

Verdicts: exact, approximate (stated approximation and measured remainder), refused (the
analysis raises a clear error saying why), wrong (a check failed), failed (an unexpected
error). `interp check` exits 1 when any verdict is wrong or failed.

    report = check_model("tiny-gemma2")
    print(report.format())
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.sites import Component, Site
from interp.data.pairs import PairBatch, TokenizedPairs

TOL = 1e-4


@dataclass(frozen=True)
class Verdict:
    analysis: str
    status: str  # exact | approximate | refused | wrong | failed
    detail: str = ""


@dataclass
class CheckReport:
    model: str
    family: str
    verdicts: list[Verdict] = field(default_factory=list)
    sites: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(v.status not in ("wrong", "failed") for v in self.verdicts)

    def format(self) -> str:
        lines = [f"interp check {self.model} ({self.family}), {self.seconds:.0f} s"]
        if self.sites:
            ok = [c for c, why in self.sites.items() if why is None]
            lines.append(f"  sites reached and writable: {', '.join(ok)}")
            lines += [f"  site {c}: not supported ({why})" for c, why in self.sites.items() if why is not None]
        width = max(len(v.analysis) for v in self.verdicts) if self.verdicts else 10
        for v in self.verdicts:
            lines.append(f"  {v.analysis:<{width}}  {v.status:<11} {v.detail}".rstrip())
        lines.append("result: " + ("every analysis is exact, approximate with its approximation stated, or refused "
                                   "with a reason" if self.ok else "SOME ANALYSES ARE WRONG OR FAILED (see above)"))
        return "\n".join(lines)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"model": self.model, "analysis": v.analysis, "status": v.status, "detail": v.detail}
                             for v in self.verdicts])


def _pairs(model: HookedModel, n: int, T: int, seed: int) -> TokenizedPairs:
    gen = torch.Generator().manual_seed(seed)
    hi = min(model.spec.d_vocab, len(model.tokenizer)) if hasattr(model.tokenizer, "__len__") else model.spec.d_vocab
    lo = min(1000, hi // 2)
    clean = torch.randint(lo, hi, (n, T), generator=gen)
    if model.prepend_bos and getattr(model.tokenizer, "bos_token_id", None) is not None:
        clean[:, 0] = model.tokenizer.bos_token_id
    corrupt = clean.clone()
    first = 1 if model.prepend_bos else 0
    for pos in (first, T // 2):
        corrupt[:, pos] = torch.randint(lo, hi, (n,), generator=gen)
    ids = torch.randint(lo, hi, (2, n), generator=gen)
    ids[1] = torch.where(ids[1] == ids[0], ids[1] + 1, ids[1])
    pb = PairBatch(clean, corrupt, ids[0], ids[1], list(range(n)), (T, None))
    return TokenizedPairs([pb], n)


def _identity(pairs: TokenizedPairs) -> TokenizedPairs:
    pb = pairs.batches[0]
    same = PairBatch(pb.clean, pb.clean.clone(), pb.answer_ids, pb.distractor_ids, pb.indices, pb.key)
    return TokenizedPairs([same], pairs.n)


def _gap(values: torch.Tensor, target: float) -> float:
    v = values[torch.isfinite(values)]
    return float((v - target).abs().max()) if v.numel() else 0.0


def _scale(x: float) -> float:
    return TOL * max(1.0, abs(x))


def _run(name: str, fn: Callable[[], Verdict], out: list[Verdict]) -> None:
    try:
        out.append(fn())
    except InterpError as e:
        out.append(Verdict(name, "refused", str(e).split("; supported here:")[0]))
    except Exception as e:  # noqa: BLE001 - a check must report, not crash
        last = traceback.extract_tb(e.__traceback__)[-1]
        out.append(Verdict(name, "failed", f"{type(e).__name__}: {e} (at {last.filename}:{last.lineno})"))


def _verdict(name: str, err: float, bound: float, what: str) -> Verdict:
    if err <= bound:
        return Verdict(name, "exact", f"{what}: max deviation {err:.1e}")
    return Verdict(name, "wrong", f"{what}: max deviation {err:.2e} > {bound:.1e}")


@dataclass
class _Inputs:
    """What every check of one model shares: the model, its seeded inputs and tolerances."""

    name: str
    model: HookedModel
    seed: int
    facts: object
    pairs: TokenizedPairs  # real corruptions
    same: TokenizedPairs  # corrupt == clean (identities)
    clean_metric: float
    bound: float
    long: torch.Tensor  # one sequence longer than the model's shortest sliding window
    T_long: int
    pb: PairBatch  # the batch of `pairs`
    sb: PairBatch  # the batch of `same`
    LH: tuple[int, int]  # layers, heads per layer


def _inputs(name: str, model: HookedModel, seed: int) -> _Inputs:
    from interp.analyses import patching

    facts = getattr(model, "facts", None)
    pairs = _pairs(model, 2, 16, seed)
    same = _identity(pairs)
    clean_metric = float(patching.baseline_metrics(model, same.batches[0], patching.get_metric("logit_diff"))[0].mean())
    windows = [w for w in (facts.windows if facts else ()) if w]
    T_long = min(max(48, (min(windows) + 16) if windows else 48), 1024)  # past the shortest window
    long = _pairs(model, 1, T_long, seed + 1).batches[0].clean.to(model.device)
    return _Inputs(name, model, seed, facts, pairs, same, clean_metric, _scale(clean_metric), long, T_long,
                   pairs.batches[0], same.batches[0], (model.spec.n_layers, model.spec.n_heads))


def _check_output_head(x: _Inputs) -> Verdict:
    model, facts = x.model, x.facts
    err = getattr(model, "output_head_error", None)
    if err is None:
        logits, cache = model.run_with_cache(x.pb.clean.to(model.device), [Site("resid_final")])
        ours = model.unembed(cache[Site("resid_final")])
        err = float((ours - logits).abs().max() / logits.abs().max())
    return _verdict("output head", err, TOL,
                    f"unembed(final residual) vs logits ({facts.tail.describe() if facts else ''})")


def _check_parity(x: _Inputs) -> Verdict:
    model = x.model
    raw = _fresh_hf(x.name, model, x.seed)
    if raw is None:
        return Verdict("parity", "refused", "no independent copy of this model can be loaded")
    with torch.no_grad():
        ref = raw(x.pb.clean.to(model.device)).logits
        ours = model.forward(x.pb.clean.to(model.device))
    err = float((ours - ref).abs().max())
    return _verdict("parity", err, _scale(float(ref.abs().max())), "logits vs a fresh Hugging Face copy")


def _check_heads(x: _Inputs) -> Verdict:
    from interp.analyses import patching

    L, H = x.LH
    res = patching.patch_heads(x.model, x.same)
    err = _gap(res.values, res.clean_metric)
    # real corruptions: the resumed, batched sweep equals a plain forward with one patch
    sites = [Site("z", layer=L - 1, head=0), Site("z", layer=0, head=H - 1),
             Site("z", layer=L // 2, head=0, position=-1)]
    swept = patching.sweep_sites(x.model, x.pb, sites).mean(1)
    err2 = _plain_patch_gap(x.model, x.pb, sites, swept)
    return _verdict("head patching", max(err, err2), x.bound, "identity and resumed-vs-full sweeps")


def _check_residual(x: _Inputs) -> Verdict:
    from interp.analyses import patching

    L, _ = x.LH
    res = patching.patch_residual(x.model, x.same)
    err = _gap(res.values, res.clean_metric)
    T = x.pb.clean.shape[1]
    sites = [Site("resid_pre", layer=L - 1, position=T // 2), Site("attn_out", layer=0, position=T // 2),
             Site("mlp_out", layer=L - 1, position=T - 1)]
    swept = patching.sweep_sites(x.model, x.pb, sites).mean(1)
    err2 = _plain_patch_gap(x.model, x.pb, sites, swept)
    return _verdict("residual patching", max(err, err2), x.bound, "identity and resumed-vs-full sweeps")


def _check_path(x: _Inputs, kind: str) -> Verdict:
    from interp.analyses.path_patching import Receiver, path_patch_senders

    L, H = x.LH
    receivers = [Receiver("logits")] if kind == "logits" else [Receiver(kind, L - 1, 0), Receiver(kind, L - 1, H - 1)]
    senders = [(layer, h) for layer in range(L) for h in range(H)]
    vals = path_patch_senders(x.model, x.sb, senders, receivers)
    return _verdict(f"path patching: {kind}", _gap(vals.mean(1), x.clean_metric), x.bound, "identity (corrupt = clean)")


def _check_atp(x: _Inputs, qk: bool) -> Verdict:
    from interp.analyses.attribution import attribution_patching

    res = attribution_patching(x.model, x.same, qk_fix=qk, residual=not qk)
    keys = ("q", "k") if qk else ("z", "mlp", "residual")
    err = max(_gap(res.results[k].values, res.results[k].corrupt_metric) for k in keys)
    return _verdict("AtP* QK fix" if qk else "AtP", err, x.bound, "identity: every effect 0")


def _check_dla(x: _Inputs) -> Verdict:
    from interp.analyses.dla import direct_logit_attribution

    d = direct_logit_attribution(x.model, x.pairs)
    detail = (f"parts sum within {d.max_abs_error:.1e}; "
              f"attention remainder {d.max_remainder:.1e} of the largest head term")
    if d.verdict == "exact":
        return Verdict("DLA", "exact", detail)
    return Verdict("DLA", "approximate", detail + "; " + "; ".join(d.approximations[1:]))


def _check_cached(x: _Inputs) -> Verdict:
    err, _ = _cached_gaps(x.model, x.long, chunk=max(16, x.T_long // 3), patterns=False)
    return _verdict("cached forwards", err, 10 * TOL, f"{x.T_long} tokens in chunks vs one forward, logits")


def _check_patterns(x: _Inputs) -> Verdict:
    _, wrong = _cached_gaps(x.model, x.long, chunk=max(16, x.T_long // 3), patterns=True)
    detail = f"{x.T_long} tokens in chunks vs one forward: {wrong} attention argmax keys differ"
    return Verdict("retrieval patterns", "exact" if wrong == 0 else "wrong", detail)


# (verdict name, check), in the order the report lists them.
_CHECKS: list[tuple[str, Callable[[_Inputs], Verdict]]] = [
    ("output head", _check_output_head),
    ("parity", _check_parity),
    ("head patching", _check_heads),
    ("residual patching", _check_residual),
    *[(f"path patching: {k}", lambda x, k=k: _check_path(x, k)) for k in ("logits", "q", "k", "v")],
    ("AtP", lambda x: _check_atp(x, False)),
    ("AtP* QK fix", lambda x: _check_atp(x, True)),
    ("DLA", _check_dla),
    ("cached forwards", _check_cached),
    ("retrieval patterns", _check_patterns),
]


def check_model(name: str, *, device: str = "cpu", backend: str | None = None, seed: int = 0,
                model: HookedModel | None = None) -> CheckReport:
    """Every check on `name` (loaded here unless `model` is given): one verdict per analysis."""
    from interp.models import load_model

    t0 = time.perf_counter()
    model = model or load_model(name, device=device, backend=backend, seed=seed)
    facts = getattr(model, "facts", None)
    report = CheckReport(name, getattr(facts, "model_type", "") or model.spec.architecture)
    status = getattr(model, "_site_status", None)
    if status:
        report.sites = {c.value: why for c, why in status.items()}
    inputs = _inputs(name, model, seed)
    for check_name, check in _CHECKS:
        _run(check_name, lambda check=check: check(inputs), report.verdicts)
    report.seconds = time.perf_counter() - t0
    return report


@torch.no_grad()
def _plain_patch_gap(model: HookedModel, pb: PairBatch, sites: list[Site], swept: torch.Tensor) -> float:
    """Max |sweep value - the same patch in one plain full forward| (denoising, logit_diff)."""
    from interp.core.hooks import site_patch_hook

    dev = model.device
    _, src = model.run_with_cache(pb.clean.to(dev), [s.hook_site for s in sites])
    r = torch.arange(len(pb), device=dev)
    a, d = pb.answer_ids.to(dev), pb.distractor_ids.to(dev)
    worst = 0.0
    for i, s in enumerate(sites):
        logits = model.run_with_hooks(pb.corrupt.to(dev), [(s.hook_site, site_patch_hook(s, src[s.hook_site]))])
        plain = float((logits[r, -1, a] - logits[r, -1, d]).mean())
        worst = max(worst, abs(plain - float(swept[i])))
    return worst


@torch.no_grad()
def _cached_gaps(model: HookedModel, tokens: torch.Tensor, chunk: int, patterns: bool) -> tuple[float, int]:
    """(max |chunked - full| logits, number of differing argmax keys when `patterns`)."""
    from contextlib import nullcontext

    from interp.analyses.retrieval import _ArgmaxKeys

    full_keys, rec = _ArgmaxKeys(model), _ArgmaxKeys(model)
    with model.hooks(full_keys.hooks()) if patterns else nullcontext():
        full = model.forward(tokens)
    parts, steps, cache = [], [], None
    for start in range(0, tokens.shape[1], chunk):
        with model.hooks(rec.hooks()) if patterns else nullcontext():
            logits, cache = model.forward_incremental(tokens[:, start:start + chunk], cache)
        parts.append(logits)
        if patterns:
            steps.append(rec.stacked())
    err = float((torch.cat(parts, 1) - full).abs().max())
    wrong = int((torch.cat(steps, -1) != full_keys.stacked()).sum()) if patterns else 0
    return err, wrong


def _fresh_hf(name: str, model: HookedModel, seed: int):
    """An independent Hugging Face copy of `name` (same weights), or None."""
    from interp.models.registry import describe_model_name

    info = describe_model_name(name)
    if info.kind == "tiny":
        from interp.models import smollm2
        from interp.models.tiny import build_tiny

        return build_tiny(name, vocab_size=len(smollm2.load_tokenizer()), seed=seed)
    from transformers import AutoModelForCausalLM

    if info.kind == "bundled":
        import importlib

        from interp.models.registry import BUNDLED_SOURCES

        path = importlib.import_module(BUNDLED_SOURCES[name][0]).cached_dir()[0]
    else:
        path = name
    return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager",
                                                dtype=model.dtype, local_files_only=info.kind != "hub").eval()


__all__ = ["CheckReport", "Verdict", "check_model", "Component"]
