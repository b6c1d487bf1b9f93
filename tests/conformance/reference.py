"""Independent raw-PyTorch references for the conformance suite.

Everything here runs on a *fresh* Hugging Face model (`interp.models.zoo.build_family`, the same
seed as the hooked model under test) with plain torch hooks. Nothing from `interp` is used
beyond that builder and the tokenizer: module paths come from this file's own per-family table
(`FAMILIES`), activations are read and written with forward (pre-)hooks on HF's own modules, and
attention inputs are swapped inside the family's own attention code:

- families whose modeling module defines `eager_attention_forward` (all but two): that module
  function is temporarily replaced by a wrapper that hands the family's own function modified
  queries/keys/values. When keys/values are made per query head (grouped-query receivers are
  isolated per query head) the wrapper sets the attention module's `num_key_value_groups` to 1
  for the call, so the function's `repeat_kv` is a no-op;
- gpt_neo: the attention module's own `_attn(query, key, value, mask)` method is wrapped;
- falcon (attention written inline): the module's own `_split_heads` is wrapped, so q/k/v are
  seen and swapped *before* the rotary embedding. Rotary is a fixed per-position map and
  clean/corrupt prompts share positions, so swapping before or after it is the same.

Conventions: `z` is the input of the attention output projection, (batch, pos, head * d_head)
head-major; `attn_out` the attention module's output[0]; `mlp_out` the MLP module's output;
`resid_pre` a decoder layer's input; q is (batch, head, pos, d_head), k/v (batch, kv_head, pos,
d_head) as the attention function receives them (after rotary and qk-norms, except falcon, see
above). The metric is logit(answer) - logit(distractor) at the last position; the lm_head is
temporarily replaced by its rows for the needed tokens (HF's own output tail - scaling,
softcap - still runs on them), which only saves time.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn


class ReferenceSelfCheckError(AssertionError):
    """The reference's own consistency check failed (a bug in this file, not in interp)."""


@dataclass(frozen=True)
class Paths:
    layers: str  # from the CausalLM: the decoder layer list
    attn: str  # from a layer: the attention module (output[0] = attn_out)
    core: str  # from a layer: the module returning (output, pattern) that owns the output projection
    o_proj: str  # from `core`: the output projection (its input is z)
    mlp: str  # from a layer
    final_norm: str  # from the CausalLM
    norm_kind: str  # final norm: "ln" | "ln_nobias" | "ln_noparam" | "rms" | "rms1p" (Gemma: x * (1 + w))
    attn_hook: str  # "eager" | "gpt_neo" | "falcon"
    post_attn_norm: str | None = None  # from a layer: norm applied to the attention output itself
    post_mlp_norm: str | None = None  # from a layer: norm applied to the MLP output itself
    post_norm_kind: str | None = None
    residual_multiplier: str | None = None  # config attribute multiplying attn/MLP outputs
    logit_multiplier: str | None = None  # config attribute: logits = lm_head(x) * value
    logit_divisor: str | None = None  # config attribute: logits = lm_head(x) / value
    final_softcap: str | None = None  # config attribute: logits = cap * tanh(logits / cap)


_LLAMA = Paths("model.layers", "self_attn", "self_attn", "o_proj", "mlp", "model.norm", "rms", "eager")
_GEMMA_SANDWICH = replace(_LLAMA, norm_kind="rms1p", post_attn_norm="post_attention_layernorm",
                          post_mlp_norm="post_feedforward_layernorm", post_norm_kind="rms1p",
                          final_softcap="final_logit_softcapping")

FAMILIES: dict[str, Paths] = {
    "gpt2": Paths("transformer.h", "attn", "attn", "c_proj", "mlp", "transformer.ln_f", "ln", "eager"),
    "gpt_neo": Paths("transformer.h", "attn", "attn.attention", "out_proj", "mlp", "transformer.ln_f", "ln", "gpt_neo"),
    "gptj": Paths("transformer.h", "attn", "attn", "out_proj", "mlp", "transformer.ln_f", "ln", "eager"),
    "gpt_neox": Paths("gpt_neox.layers", "attention", "attention", "dense", "mlp", "gpt_neox.final_layer_norm",
                      "ln", "eager"),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "mixtral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen2_moe": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": replace(_LLAMA, norm_kind="rms1p"),
    "gemma2": _GEMMA_SANDWICH,
    "gemma3_text": _GEMMA_SANDWICH,
    "phi": Paths("model.layers", "self_attn", "self_attn", "dense", "mlp", "model.final_layernorm", "ln", "eager"),
    "phi3": _LLAMA,
    "olmo": replace(_LLAMA, norm_kind="ln_noparam"),
    "olmo2": replace(_LLAMA, post_attn_norm="post_attention_layernorm", post_mlp_norm="post_feedforward_layernorm",
                     post_norm_kind="rms"),
    "falcon": Paths("transformer.h", "self_attention", "self_attention", "dense", "mlp", "transformer.ln_f", "ln",
                    "falcon"),
    "stablelm": replace(_LLAMA, norm_kind="ln"),
    "starcoder2": replace(_LLAMA, norm_kind="ln"),
    "granite": replace(_LLAMA, residual_multiplier="residual_multiplier", logit_divisor="logits_scaling"),
    "cohere": replace(_LLAMA, norm_kind="ln_nobias", logit_multiplier="logit_scale"),
}

RESIDUAL_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")


def _get(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _observe(fn, *args) -> None:
    """Call an observing hook function; the hook itself returns None (changes nothing)."""
    fn(*args)


def _with_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


# -- norms with their scale frozen -------------------------------------------------------------

def _norm_eps(kind: str, module: nn.Module) -> float:
    if kind == "ln_noparam":
        return 1e-5  # OlmoLayerNorm: F.layer_norm(..., eps=1e-5), no parameters
    for attr in ("variance_epsilon", "eps"):
        if getattr(module, attr, None) is not None:
            return float(getattr(module, attr))
    raise ReferenceSelfCheckError(f"no epsilon on {type(module).__name__}")


def frozen_norm(kind: str, module: nn.Module, x_actual: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """`part` through the norm `module` with the scale it had on its actual input `x_actual`
    (same leading shape, last axis d_model): linear in `part`, bias excluded."""
    x, p = x_actual.float(), part.float()
    eps = _norm_eps(kind, module)
    if kind.startswith("ln"):
        xc = x - x.mean(-1, keepdim=True)
        p = p - p.mean(-1, keepdim=True)
        scale = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
        weight = 1.0 if kind == "ln_noparam" else module.weight.float()
        return p * scale * weight
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    weight = module.weight.float() + 1.0 if kind == "rms1p" else module.weight.float()
    return p * scale * weight


def norm_bias(kind: str, module: nn.Module) -> torch.Tensor | float:
    b = getattr(module, "bias", None) if kind == "ln" else None
    return b.float() if b is not None else 0.0


def check_frozen_norm(kind: str, module: nn.Module, x: torch.Tensor) -> None:
    """The frozen map of the actual input plus the bias must be the module's own output."""
    with torch.no_grad():
        mine = frozen_norm(kind, module, x, x) + norm_bias(kind, module)
        theirs = module(x).float()
    err = float((mine - theirs).abs().max())
    if err > 1e-4 * max(1.0, float(theirs.abs().max())):
        raise ReferenceSelfCheckError(f"frozen-norm table wrong for {type(module).__name__} ({kind}): error {err:.3g}")


# -- the raw model -----------------------------------------------------------------------------

QKVFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
ActFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


def _expand(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, kv, T, d) -> (b, heads, T, d), query head h reading kv head h // (heads // kv)."""
    return t if t.shape[1] == heads else t.repeat_interleave(heads // t.shape[1], dim=1)


class RawModel:
    """A fresh HF causal LM of `family` and the raw computations on it."""

    def __init__(self, family: str, hf: nn.Module):
        self.family = family
        self.hf = hf.eval()
        for p in hf.parameters():
            p.requires_grad_(False)
        self.paths = paths = FAMILIES[family]
        self.layers = list(_get(hf, paths.layers))
        self.L = len(self.layers)
        self.attn = [_get(layer, paths.attn) for layer in self.layers]
        self.core = [_get(layer, paths.core) for layer in self.layers]
        self.o_proj = [_get(c, paths.o_proj) for c in self.core]
        self.mlp = [_get(layer, paths.mlp) for layer in self.layers]
        self.final_norm = _get(hf, paths.final_norm)
        self.post_attn_norm = [_get(la, paths.post_attn_norm) for la in self.layers] if paths.post_attn_norm else None
        self.post_mlp_norm = [_get(la, paths.post_mlp_norm) for la in self.layers] if paths.post_mlp_norm else None
        self.H = int(hf.config.num_attention_heads)
        o = self.o_proj[0]
        in_features = o.in_features if isinstance(o, nn.Linear) else o.weight.shape[0]  # GPT-2 Conv1D: (in, out)
        self.d_head = in_features // self.H
        self._layer_of = {id(c): i for i, c in enumerate(self.core)}

    # -- per-head output weights ------------------------------------------------------------
    def W_O(self, layer: int, head: int) -> torch.Tensor:
        """(d_head, d_model): head `head`'s slice of the output projection."""
        sl = slice(head * self.d_head, (head + 1) * self.d_head)
        o = self.o_proj[layer]
        if isinstance(o, nn.Linear):  # weight (d_model, H * d_head)
            return o.weight[:, sl].T.float()
        return o.weight[sl].float()  # Conv1D weight (H * d_head, d_model)

    # -- hooks ---------------------------------------------------------------------------------
    @contextmanager
    def hooked(self, *, z: ActFn | None = None, resid_pre: ActFn | None = None, attn_out: ActFn | None = None,
               mlp_out: ActFn | None = None, pattern: ActFn | None = None, qkv: QKVFn | None = None,
               final_in: Callable[[torch.Tensor], None] | None = None, norm_in: ActFn | None = None,
               mlp_norm_in: ActFn | None = None, attn_write: ActFn | None = None, mlp_write: ActFn | None = None,
               embed_leaf: bool = False) -> Iterator[None]:
        """Hook functions get (layer, tensor) and return a replacement or None. `attn_write` /
        `mlp_write`: what is added to the residual stream - the output of the post-attention /
        post-MLP norm where the family has one (Gemma 2/3, OLMo 2), else attn_out / mlp_out."""
        with ExitStack() as stack:
            handles = []

            def keep(h):
                handles.append(h)

            for i in range(self.L):
                if z is not None:
                    keep(self.o_proj[i].register_forward_pre_hook(
                        lambda _m, args, i=i: None if (new := z(i, args[0])) is None else (new, *args[1:])))
                if resid_pre is not None:
                    def pre(_m, args, kwargs, i=i):
                        x = args[0] if args else kwargs["hidden_states"]
                        new = resid_pre(i, x)
                        if new is None:
                            return None
                        if args:
                            return (new, *args[1:]), kwargs
                        return args, {**kwargs, "hidden_states": new}

                    keep(self.layers[i].register_forward_pre_hook(pre, with_kwargs=True))
                if attn_out is not None:
                    keep(self.attn[i].register_forward_hook(
                        lambda _m, _a, out, i=i: (
                            None if (new := attn_out(i, _first(out))) is None else _with_first(out, new))))
                if mlp_out is not None:
                    keep(self.mlp[i].register_forward_hook(
                        lambda _m, _a, out, i=i: (
                            None if (new := mlp_out(i, _first(out))) is None else _with_first(out, new))))
                for fn, post, mod in ((attn_write, self.post_attn_norm, self.attn[i]),
                                      (mlp_write, self.post_mlp_norm, self.mlp[i])):
                    if fn is not None:
                        keep((post[i] if post is not None else mod).register_forward_hook(
                            lambda _m, _a, out, i=i, fn=fn: (
                                None if (new := fn(i, _first(out))) is None else _with_first(out, new))))
                if pattern is not None:
                    keep(self.core[i].register_forward_hook(lambda _m, _a, out, i=i: _observe(pattern, i, out[1])))
                if norm_in is not None and self.post_attn_norm is not None:
                    keep(self.post_attn_norm[i].register_forward_pre_hook(
                        lambda _m, args, i=i: _observe(norm_in, i, args[0])))
                if mlp_norm_in is not None and self.post_mlp_norm is not None:
                    keep(self.post_mlp_norm[i].register_forward_pre_hook(
                        lambda _m, args, i=i: _observe(mlp_norm_in, i, args[0])))
            if final_in is not None:
                keep(self.final_norm.register_forward_pre_hook(lambda _m, args: _observe(final_in, args[0])))
            if embed_leaf:
                keep(self.hf.get_input_embeddings().register_forward_hook(
                    lambda _m, _a, out: out.detach().requires_grad_(True)))
            stack.callback(lambda: [h.remove() for h in handles])
            if qkv is not None:
                stack.enter_context(self._attention_inputs(qkv))
            yield

    @contextmanager
    def _attention_inputs(self, fn: QKVFn) -> Iterator[None]:
        kind = self.paths.attn_hook
        H = self.H
        if kind == "eager":
            mod = sys.modules[type(self.core[0]).__module__]
            orig = mod.eager_attention_forward
            layer_of = self._layer_of

            def wrapper(module, query, key, value, *args, **kwargs):
                i = layer_of.get(id(module))
                if i is None:
                    return orig(module, query, key, value, *args, **kwargs)
                q, k, v = fn(i, query, key, value)
                if k.shape[1] == key.shape[1] and v.shape[1] == value.shape[1]:
                    return orig(module, q, k, v, *args, **kwargs)
                k, v = _expand(k, H), _expand(v, H)
                if not hasattr(module, "num_key_value_groups"):
                    raise ReferenceSelfCheckError(
                        f"{type(module).__name__} has grouped keys but no num_key_value_groups")
                saved = module.num_key_value_groups
                module.num_key_value_groups = 1  # keys/values are already per query head
                try:
                    return orig(module, q, k, v, *args, **kwargs)
                finally:
                    module.num_key_value_groups = saved

            mod.eager_attention_forward = wrapper
            try:
                yield
            finally:
                mod.eager_attention_forward = orig
        elif kind == "gpt_neo":
            for i, core in enumerate(self.core):
                orig_attn = core._attn

                def _attn(query, key, value, attention_mask=None, i=i, orig_attn=orig_attn):
                    return orig_attn(*fn(i, query, key, value), attention_mask)

                core._attn = _attn
            try:
                yield
            finally:
                for core in self.core:
                    del core._attn
        elif kind == "falcon":
            saved_kv = [core.num_kv_heads for core in self.core]
            for i, core in enumerate(self.core):
                orig_split = core._split_heads

                def split(fused, i=i, orig_split=orig_split):
                    q, k, v = (t.transpose(1, 2) for t in orig_split(fused))  # (b, heads, T, d)
                    q, k, v = fn(i, q, k, v)
                    k, v = _expand(k, H), _expand(v, H)
                    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

                core._split_heads = split
                core.num_kv_heads = H  # keys/values come back per query head
            try:
                yield
            finally:
                for core, kv in zip(self.core, saved_kv, strict=True):
                    del core._split_heads
                    core.num_kv_heads = kv
        else:
            raise ValueError(kind)

    # -- forwards ------------------------------------------------------------------------------
    @contextmanager
    def _head_rows(self, cols: torch.Tensor | None) -> Iterator[None]:
        if cols is None:
            yield
            return
        full = self.hf.lm_head
        sub = nn.Linear(full.in_features, len(cols), bias=full.bias is not None)
        sub.weight = nn.Parameter(full.weight[cols].detach().clone(), requires_grad=False)
        if full.bias is not None:
            sub.bias = nn.Parameter(full.bias[cols].detach().clone(), requires_grad=False)
        self.hf.lm_head = sub
        try:
            yield
        finally:
            self.hf.lm_head = full

    def logits(self, tokens: torch.Tensor, **hooks) -> torch.Tensor:
        with torch.no_grad(), self.hooked(**hooks):
            return self.hf(input_ids=tokens, use_cache=False).logits

    def metric(self, tokens: torch.Tensor, answer: torch.Tensor, distractor: torch.Tensor, **hooks) -> torch.Tensor:
        """Per-prompt logit(answer) - logit(distractor) at the last position (grad if enabled)."""
        cols = torch.unique(torch.cat([answer, distractor]))
        with self.hooked(**hooks), self._head_rows(cols):
            last = self.hf(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[:, -1]
        r = torch.arange(tokens.shape[0])
        return last[r, torch.searchsorted(cols, answer)] - last[r, torch.searchsorted(cols, distractor)]

    @torch.no_grad()
    def ld(self, tokens, answer, distractor, **hooks) -> torch.Tensor:
        return self.metric(tokens, answer, distractor, **hooks)

    @torch.no_grad()
    def capture(self, tokens: torch.Tensor) -> dict[str, dict[int, torch.Tensor]]:
        """Every layer's z, resid_pre, attn_out, mlp_out, attn_write, mlp_write, q, k, v and
        pattern on `tokens`."""
        store: dict[str, dict[int, torch.Tensor]] = {k: {} for k in ("z", "resid_pre", "attn_out", "mlp_out",
                                                                       "attn_write", "mlp_write", "pattern",
                                                                       "q", "k", "v")}

        def rec(name):
            return lambda i, t: store[name].__setitem__(i, t.detach().clone())

        def qkv(i, q, k, v):
            store["q"][i], store["k"][i], store["v"][i] = q.detach().clone(), k.detach().clone(), v.detach().clone()
            return q, k, v

        with self.hooked(z=rec("z"), resid_pre=rec("resid_pre"), attn_out=rec("attn_out"), mlp_out=rec("mlp_out"),
                         attn_write=rec("attn_write"), mlp_write=rec("mlp_write"), pattern=rec("pattern"), qkv=qkv), \
                self._head_rows(torch.tensor([0])):
            self.hf(input_ids=tokens, use_cache=False, logits_to_keep=1)
        return store

    # -- (b) head patching -------------------------------------------------------------------
    def head_slice(self, head: int) -> slice:
        return slice(head * self.d_head, (head + 1) * self.d_head)

    def patch_heads(self, base, source, answer, distractor, *, per_position: bool) -> torch.Tensor:
        """(layer, head, prompt) or (layer, head, position, prompt): metric with head h's z
        (at all positions, or at one) taken from the `source` run."""
        src = self.capture(source)["z"]
        T = base.shape[1]
        positions: Sequence = range(T) if per_position else [slice(None)]
        out = torch.empty(self.L, self.H, len(positions), base.shape[0])
        for layer in range(self.L):
            for h in range(self.H):
                sl = self.head_slice(h)
                for j, p in enumerate(positions):
                    def zfn(i, z, layer=layer, sl=sl, p=p):
                        if i != layer:
                            return None
                        z = z.clone()
                        z[:, p, sl] = src[layer][:, p, sl]
                        return z

                    out[layer, h, j] = self.ld(base, answer, distractor, z=zfn)
        return out if per_position else out[:, :, 0]

    # -- (c) residual patching ---------------------------------------------------------------
    def patch_site(self, base, answer, distractor, component: str, layer: int, position, src: torch.Tensor):
        """Metric with `component` at (layer, position) of the base run replaced by `src`
        (the whole activation of the source run at that layer)."""

        def fn(i, t):
            if i != layer:
                return None
            t = t.clone()
            t[:, position] = src[:, position]
            return t

        return self.ld(base, answer, distractor, **{component: fn})

    def patch_residual(self, base, source, answer, distractor) -> torch.Tensor:
        """(component, layer, position, prompt) for RESIDUAL_COMPONENTS."""
        src = self.capture(source)
        T = base.shape[1]
        out = torch.empty(len(RESIDUAL_COMPONENTS), self.L, T, base.shape[0])
        for c, comp in enumerate(RESIDUAL_COMPONENTS):
            for layer in range(self.L):
                for p in range(T):
                    out[c, layer, p] = self.patch_site(base, answer, distractor, comp, layer, p, src[comp][layer])
        return out

    # -- (d) path patching -------------------------------------------------------------------
    def path_patch(self, clean, corrupt, answer, distractor, sender: tuple[int, int],
                   receivers: Sequence[tuple], clean_z=None, corrupt_z=None) -> torch.Tensor:
        """Per-prompt metric. Receivers: ("logits",) or (kind, layer, head), kind in q/k/v.

        Pass 1: clean run, every head's z frozen to its clean value except the sender's, which
        takes its corrupt value; MLPs recomputed; record each receiver layer's q/k/v as the
        attention function receives them. Pass 2 (head receivers): clean run with only the
        receiver heads' q (or their per-query-head view of k / v) replaced by pass 1's."""
        clean_z = clean_z if clean_z is not None else self.capture(clean)["z"]
        corrupt_z = corrupt_z if corrupt_z is not None else self.capture(corrupt)["z"]
        s_layer, s_head = sender
        sl = self.head_slice(s_head)

        def freeze(i, z):
            if i > s_layer:
                return clean_z[i]
            if i == s_layer:
                z = z.clone()
                z[:, :, sl] = corrupt_z[i][:, :, sl]
                return z
            return None

        if receivers[0][0] == "logits":
            return self.ld(clean, answer, distractor, z=freeze)
        recorded: dict[int, tuple[torch.Tensor, ...]] = {}

        def record(i, q, k, v):
            recorded[i] = (q.clone(), k.clone(), v.clone())
            return q, k, v

        self.ld(clean, answer, distractor, z=freeze, qkv=record)

        def swap(i, q, k, v):
            mine = [r for r in receivers if r[1] == i]
            if not mine:
                return q, k, v
            q_rec, k_rec, v_rec = recorded[i]
            group = self.H // k.shape[1]
            q, k, v = q.clone(), _expand(k, self.H).clone(), _expand(v, self.H).clone()
            for kind, _, h in mine:
                if kind == "q":
                    q[:, h] = q_rec[:, h]
                elif kind == "k":
                    k[:, h] = k_rec[:, h // group]
                elif kind == "v":
                    v[:, h] = v_rec[:, h // group]
                else:
                    raise ValueError(kind)
            return q, k, v

        return self.ld(clean, answer, distractor, qkv=swap)

    # -- (e) attribution patching --------------------------------------------------------------
    def atp(self, clean, corrupt, answer, distractor) -> dict[str, torch.Tensor]:
        """Denoising AtP, per prompt: effect = (a_clean - a_corrupt) . dM/da on the corrupt run
        (M = summed logit difference), from raw autograd.
        z: (prompt, layer, head) summed over positions; mlp: (prompt, layer); residual:
        (prompt, component, layer, position) for resid_pre, attn_out, mlp_out; q / k (AtP* QK fix):
        (prompt, layer, head), the head's exact pattern with its query (keys) from the clean run,
        computed by the model's own attention in a corrupt forward, minus the corrupt pattern,
        dotted with dM/dpattern.

        AtP depends on where a nonlinear per-position map sits: attn_out / mlp_out are taken at
        the write into the residual stream (`attn_write` / `mlp_write`: after the Gemma 2/3 and
        OLMo 2 post-norms), as TransformerLens's hook_attn_out / hook_mlp_out define them and as
        DLA adds them to the residual. (Linear maps - Granite's residual multiplier - do not
        change AtP.) For exact patching the two places are equivalent."""
        c = self.capture(clean)
        names = ("z", "resid_pre", "attn_write", "mlp_write", "pattern")
        acts: dict[str, dict[int, torch.Tensor]] = {k: {} for k in names}  # the tensors (their .grad)
        vals: dict[str, dict[int, torch.Tensor]] = {k: {} for k in names}  # their values, copied at the hook

        def keep(name):
            def fn(i, t):
                if t.requires_grad:
                    t.retain_grad()
                acts[name][i] = t
                vals[name][i] = t.detach().clone()  # falcon adds into the MLP output in place

            return fn

        with torch.enable_grad():
            m = self.metric(corrupt, answer, distractor, embed_leaf=True, z=keep("z"), resid_pre=keep("resid_pre"),
                            attn_write=keep("attn_write"), mlp_write=keep("mlp_write"), pattern=keep("pattern"))
            m.sum().backward()
        for name, d in acts.items():
            for i, t in d.items():
                if t.grad is None:
                    raise ReferenceSelfCheckError(f"no gradient reached {name} of layer {i}")
        b, T = corrupt.shape
        L, H, dh = self.L, self.H, self.d_head
        out: dict[str, torch.Tensor] = {"corrupt_metric": m.detach(),
                                        "clean_metric": self.ld(clean, answer, distractor)}
        out["z"] = torch.stack([((c["z"][i] - vals["z"][i]) * acts["z"][i].grad).view(b, T, H, dh).sum((1, 3))
                                for i in range(L)], 1)
        out["mlp"] = torch.stack([((c["mlp_write"][i] - vals["mlp_write"][i]) * acts["mlp_write"][i].grad).sum((1, 2))
                                  for i in range(L)], 1)
        out["residual"] = torch.stack([
            torch.stack([((c[comp][i] - vals[comp][i]) * acts[comp][i].grad).sum(-1) for i in range(L)], 1)
            for comp in ("resid_pre", "attn_write", "mlp_write")], 1)
        for which in ("q", "k"):
            per_layer = []
            for layer in range(L):
                seen: dict[int, torch.Tensor] = {}

                def swap(i, q, k, v, layer=layer, which=which):
                    if i != layer:
                        return q, k, v
                    return (c["q"][i], k, v) if which == "q" else (q, c["k"][i], v)

                self.ld(corrupt, answer, distractor, qkv=swap, pattern=lambda i, p, seen=seen: seen.__setitem__(i, p))
                per_layer.append(((seen[layer] - vals["pattern"][layer]) * acts["pattern"][layer].grad).sum((2, 3)))
            out[which] = torch.stack(per_layer, 1)
        return out

    # -- (f) direct logit attribution ------------------------------------------------------------
    @torch.no_grad()
    def dla(self, tokens, answer, distractor) -> dict[str, torch.Tensor]:
        """Per prompt: `logit_diff` (the model's, after its whole output tail), `heads` (prompt,
        layer, head) and `mlp` (prompt, layer) direct contributions before any final softcap
        (`softcapped` says whether there is one): the part's write at the last position,
        through the post-attention / post-MLP norm where the family has one and the final norm,
        each with its scale frozen at the actual run, times the residual multiplier, dotted
        with W_U[answer] - W_U[distractor], times the logit scaling.

        Self-check: all parts (embeddings, heads, attention bias, MLPs, norm and unembedding
        biases) must sum to the model's logit difference before the softcap."""
        rec: dict[str, dict[int, torch.Tensor]] = {k: {} for k in ("z", "attn_out", "mlp_out", "norm_in", "mlp_norm_in",
                                                                     "resid_pre")}
        final: dict[str, torch.Tensor] = {}

        def r(name):
            # cloned: falcon adds the attention output into the MLP output in place
            return lambda i, t: rec[name].__setitem__(i, t[:, -1].detach().float().clone())

        ld = self.metric(tokens, answer, distractor, z=r("z"), attn_out=r("attn_out"), mlp_out=r("mlp_out"),
                         norm_in=r("norm_in"), mlp_norm_in=r("mlp_norm_in"), resid_pre=r("resid_pre"),
                         final_in=lambda x: final.__setitem__("x", x[:, -1].detach().float().clone()))
        cfg = self.hf.config
        p = self.paths
        rm = float(getattr(cfg, p.residual_multiplier)) if p.residual_multiplier else 1.0
        factor = 1.0
        if p.logit_multiplier:
            factor *= float(getattr(cfg, p.logit_multiplier))
        if p.logit_divisor:
            factor /= float(getattr(cfg, p.logit_divisor))
        cap = getattr(cfg, p.final_softcap, None) if p.final_softcap else None
        W_U = self.hf.lm_head.weight.float()
        direction = W_U[answer] - W_U[distractor]  # (b, d_model)
        x_final = final["x"]
        check_frozen_norm(p.norm_kind, self.final_norm, x_final)

        def to_logits(part):  # (b, d_model) written to the residual -> (b,)
            return (frozen_norm(p.norm_kind, self.final_norm, x_final, part) * direction).sum(-1) * factor

        def through(norms, kind, key, i, part):
            if norms is None:
                return part
            check_frozen_norm(kind, norms[i], rec[key][i])
            return frozen_norm(kind, norms[i], rec[key][i], part)

        heads = torch.zeros(tokens.shape[0], self.L, self.H)
        mlp = torch.zeros(tokens.shape[0], self.L)
        total = to_logits(rec["resid_pre"][0])
        for i in range(self.L):
            outs = [rec["z"][i][:, self.head_slice(h)] @ self.W_O(i, h) for h in range(self.H)]
            for h, o in enumerate(outs):
                heads[:, i, h] = to_logits(through(self.post_attn_norm, p.post_norm_kind, "norm_in", i, o) * rm)
            bias_part = rec["attn_out"][i] - torch.stack(outs).sum(0)
            total = total + heads[:, i].sum(-1) + to_logits(
                through(self.post_attn_norm, p.post_norm_kind, "norm_in", i, bias_part) * rm)
            mlp[:, i] = to_logits(
                through(self.post_mlp_norm, p.post_norm_kind, "mlp_norm_in", i, rec["mlp_out"][i]) * rm)
            total = total + mlp[:, i]
        total = total + (norm_bias(p.norm_kind, self.final_norm) * direction).sum(-1) * factor
        if self.hf.lm_head.bias is not None:
            b_U = self.hf.lm_head.bias.float()
            total = total + (b_U[answer] - b_U[distractor]) * factor
        # the model's own logit difference before its softcap (softcap inverted per logit)
        cols = torch.unique(torch.cat([answer, distractor]))
        with self._head_rows(cols):
            last = self.hf(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        if cap:
            last = cap * torch.atanh(last / cap)
        rr = torch.arange(tokens.shape[0])
        pre = last[rr, torch.searchsorted(cols, answer)] - last[rr, torch.searchsorted(cols, distractor)]
        err = float((total - pre).abs().max())
        if err > 1e-3 * max(1.0, float(pre.abs().max())):
            raise ReferenceSelfCheckError(
                f"DLA parts sum to {total.tolist()}, model says {pre.tolist()} ({self.family})")
        return {"logit_diff": ld, "heads": heads, "mlp": mlp, "softcapped": torch.tensor(bool(cap)),
                "pre_softcap_logit_diff": pre}

    # -- (g) retrieval: argmax key per query --------------------------------------------------
    @torch.no_grad()
    def attention_patterns(self, tokens: torch.Tensor) -> torch.Tensor:
        """(layer, head, query, key) patterns of one prompt (1, T) from a full forward with
        output_attentions=True."""
        out = self.hf(input_ids=tokens, use_cache=False, output_attentions=True)
        if out.attentions is None or any(a is None for a in out.attentions):
            raise ReferenceSelfCheckError(f"{self.family}: output_attentions=True returned no patterns")
        return torch.stack([a[0].float() for a in out.attentions])


def softcap_note(raw: RawModel) -> str:
    attr = raw.paths.final_softcap
    cap = getattr(raw.hf.config, attr, None) if attr else None
    return f" (compared before the final logit softcap {cap:g}, which is nonlinear)" if cap else ""


def isclose_report(ours: torch.Tensor, ref: torch.Tensor, *, atol: float = 1e-4, rtol: float = 1e-4) -> str | None:
    """None when |ours - ref| <= atol + rtol |ref| everywhere, else a one-line description."""
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    if ours.shape != ref.shape:
        return f"shape {tuple(ours.shape)} != reference shape {tuple(ref.shape)}"
    bad = ~((ours - ref).abs() <= atol + rtol * ref.abs())
    nan_mismatch = torch.isnan(ours) != torch.isnan(ref)
    bad = (bad & ~(torch.isnan(ours) & torch.isnan(ref))) | nan_mismatch
    if not bad.any():
        return None
    diff = (ours - ref).abs().nan_to_num(math.inf)
    idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
    return (f"max abs error {float(diff.max()):.3g} at {idx} (interp {float(ours[idx]):.6g}, reference "
            f"{float(ref[idx]):.6g}); {int(bad.sum())}/{bad.numel()} entries off (atol {atol:g}, rtol {rtol:g})")
