"""TransformerLens 4 `TransformerBridge` backend.

The bridge wraps an unmodified Hugging Face model in place (its blocks become `BlockBridge`
modules with hook points such as `blocks.L.attn.hook_z`), so the weights and the arithmetic are
HF's own: logits match the raw model exactly. Sites map to hook names through `HOOK_NAMES`, a
table; we attach plain torch forward hooks to the bridge's `HookPoint` modules.

`forward_from` resumes a forward at block L by calling the bridge's blocks directly with the
block arguments captured from one real forward (`capture_block_inputs`), so sweeps skip the
unpatched prefix; the bridge's own `start_at_layer` still executes blocks 0..L-1.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from interp.core.errors import SiteError, UnsupportedError
from interp.core.hooks import Handle, HookFn
from interp.core.model import BlockInputs, FinalNorm, ModelSpec
from interp.core.sites import Component, Site
from interp.core.types import ColumnLogits, Columns, FinalResidual, Logits, Residual, Tokens
from interp.models.arch import SCALE_ATTRS, arch_facts, attention_scale_from_config
from interp.models.backends.base import HookedLM, project
from interp.models.backends.resume import capture, resume
from interp.models.placement import is_dispatched, module_tensor, weights_materialized

HOOK_NAMES: dict[Component, str] = {
    Component.EMBED: "embed.hook_out",
    Component.RESID_PRE: "blocks.{layer}.hook_resid_pre",
    Component.RESID_MID: "blocks.{layer}.hook_resid_mid",
    Component.RESID_POST: "blocks.{layer}.hook_resid_post",
    Component.ATTN_OUT: "blocks.{layer}.hook_attn_out",
    Component.ATTN_IN: "blocks.{layer}.attn.hook_in",
    Component.MLP_OUT: "blocks.{layer}.hook_mlp_out",
    Component.Z: "blocks.{layer}.attn.hook_z",
    Component.Q: "blocks.{layer}.attn.hook_q",
    Component.K: "blocks.{layer}.attn.hook_k",
    Component.V: "blocks.{layer}.attn.hook_v",
    Component.Q_ROT: "blocks.{layer}.attn.hook_rot_q",
    Component.K_ROT: "blocks.{layer}.attn.hook_rot_k",
    Component.ATTN_SCORES: "blocks.{layer}.attn.hook_attn_scores",
    Component.PATTERN: "blocks.{layer}.attn.hook_pattern",
    Component.RESID_FINAL: "ln_final.hook_in",
}

# Where a model has no rotary embeddings, the rotated queries/keys are the plain ones.
HOOK_FALLBACKS: dict[Component, Component] = {Component.Q_ROT: Component.Q, Component.K_ROT: Component.K}

class TLBridgeModel(HookedLM):
    backend = "transformer_lens"

    def __init__(self, name: str, hf_model: Any, tokenizer: Any, *, weights_sha256: str | None,
                 prepend_bos: bool = False):
        from transformer_lens.model_bridge import TransformerBridge

        hf_model.eval()
        self.hf_model = hf_model
        self.bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer)
        self.bridge.eval()
        # The bridge may build new parameters (e.g. GPT-2's fused c_attn split into q/k/v);
        # analyses never train weights, so freeze them all after wrapping.
        for p in self.bridge.parameters():
            p.requires_grad_(False)
        self._identify(name, hf_model, tokenizer, weights_sha256, prepend_bos)
        cfg = self.bridge.cfg
        self.spec = ModelSpec(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_key_value_heads or cfg.n_heads,
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            d_vocab=cfg.d_vocab,
            architecture=cfg.architecture or type(hf_model).__name__,
            n_ctx=getattr(cfg, "n_ctx", None),
        )
        self._hook_dict = self.bridge.hook_dict
        self._W_U: torch.Tensor | None = None
        self._W_O: torch.Tensor | None = None
        self._W_O_layers: dict[int, torch.Tensor] = {}  # per layer, under a device map
        self._qkv: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor | None]]] = {}
        self._dispatched = is_dispatched(hf_model)
        self.facts = arch_facts(hf_model)
        # component -> None (reached, writes honoured) or why it is not offered on this model
        self._site_status: dict[Component, str | None] = {}
        self.output_head_error = self._verify_output_head()
        # Probed now, while no analysis hooks are attached (they would distort the probe).
        for comp in HOOK_NAMES:
            self._site_status[comp] = self._probe_component(comp)

    # -- hooks -------------------------------------------------------------------------------
    def hook_name(self, site: Site) -> str:
        self.check_range(site)
        if site.component not in HOOK_NAMES:
            raise SiteError(f"site {site}: component {site.component.value!r} does not exist in "
                            f"{self.spec.architecture}; allowed: {', '.join(c.value for c in HOOK_NAMES)}")
        name = HOOK_NAMES[site.component].format(layer=site.layer)
        if name not in self._hook_dict and site.component in HOOK_FALLBACKS:
            name = HOOK_NAMES[HOOK_FALLBACKS[site.component]].format(layer=site.layer)
        if name not in self._hook_dict:
            raise SiteError(f"site {site} ({name}) does not exist in {self.spec.architecture}")
        return name

    def validate_site(self, site: Site) -> None:
        self.hook_name(site)
        self.check_component(site.component)

    def check_component(self, component: Component | str) -> None:
        """Raise `SiteError` unless `component`'s hook is reached in a forward at every layer
        and a write to it changes the logits (probed once per component on a short input)."""
        comp = Component(component)
        why = self._site_status.get(comp)
        if why is not None:
            ok = [c.value for c, w in self._site_status.items() if w is None]
            raise SiteError(
                f"site {comp.value!r} is not supported on {self.spec.architecture} "
                f"({self.facts.model_type}): {why}" + (f"; supported here: {', '.join(ok)}" if ok else "")
            )

    @torch.no_grad()
    def _probe_component(self, comp: Component) -> str | None:
        with warnings.catch_warnings():  # the bridge warns about the very writes we test
            warnings.simplefilter("ignore")
            return self._probe_component_quiet(comp)

    def _probe_component_quiet(self, comp: Component) -> str | None:
        layered = "{layer}" in HOOK_NAMES[comp]
        layers = range(self.spec.n_layers) if layered else [None]
        names = {}
        for layer in layers:
            site = Site(comp, layer=layer)
            try:
                names[layer] = self.hook_name(site)
            except SiteError as e:
                return str(e)
        tokens = self._probe_tokens()
        fired: set[int | None] = set()

        def mark(_t: torch.Tensor, s: Site) -> None:
            fired.add(s.layer)

        handles = [self.add_hook(Site(comp, layer=layer), mark) for layer in layers]
        try:
            base = self.forward(tokens)
        finally:
            for h in handles:
                h.remove()
        missing = [layer for layer in layers if layer not in fired]
        if missing:
            return f"its hook ({names[missing[0]]}) never fires in a forward pass"
        # A write must reach the logits: perturb the site at the first layer.
        gen = torch.Generator(device="cpu").manual_seed(0)

        def perturb(t: torch.Tensor, _s: Site) -> torch.Tensor:
            noise = torch.randn(t.shape, generator=gen).to(t.device, t.dtype)
            live = t.detach().float().abs() < 1e30  # masked attention scores are ~finfo.min
            scale = t.detach().float()[live].std().clamp_min(1e-3) if bool(live.any()) else 1.0
            return t + noise * float(scale) * live.to(t.dtype)

        h = self.add_hook(Site(comp, layer=layers[0]), perturb)
        try:
            changed = self.forward(tokens)
        finally:
            h.remove()
        if not bool((changed - base).abs().max() > 1e-6):
            return f"writes to its hook ({names[layers[0]]}) are ignored by the forward pass"
        return None

    def _probe_tokens(self) -> torch.Tensor:
        # longer than the shortest sliding window, so masked and unmasked keys both occur
        windows = [w for w in self.facts.windows if w]
        n = min(max(8, (min(windows) + 2) if windows else 8), 64)
        return (torch.arange(n, device=self.device) % max(2, self.spec.d_vocab - 1) + 1).unsqueeze(0)

    @torch.no_grad()
    def _verify_output_head(self) -> float:
        """Max |unembed(final residual) - logits| on a short input: the tail (norm, lm_head,
        scaling, softcap) must reproduce the model's own output head."""
        tokens = self._probe_tokens()
        store: dict[str, torch.Tensor] = {}
        h = self.add_hook(Site("resid_final"), lambda t, s: store.__setitem__("x", t.detach()))
        try:
            logits = self.forward(tokens)
        finally:
            h.remove()
        if "x" not in store:
            return float("inf")
        ours = self._unembed_unchecked(store["x"])
        return float((ours - logits).abs().max() / logits.abs().max().clamp_min(1e-6))

    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        """Through the HookPoint's own `add_hook`, so TransformerLens knows the point is
        hooked (some bridges fire a point only then, e.g. Granite's scaled hook_attn_out) and
        applies its layout conversion both ways (hook_z holds the flat o_proj input)."""
        point = self._hook_dict[self.hook_name(site)]
        if self._site_status:
            self.check_component(site.component)
        whole = site.hook_site

        def tl_hook(t: torch.Tensor, hook: Any = None) -> torch.Tensor | None:
            return fn(t, whole)

        handle = point.add_hook(tl_hook, dir="fwd")
        return _LensRemoval(point, handle)

    # -- forwards ----------------------------------------------------------------------------
    def forward(self, tokens: Tokens) -> Logits:
        logits: torch.Tensor = self.bridge(tokens.to(self.device), return_type="logits")
        return logits

    def forward_incremental(self, tokens: Tokens, past: Any = None, *,
                            last_logits: int | None = None) -> tuple[torch.Tensor, Any]:
        from transformers import DynamicCache

        cache = DynamicCache() if past is None else past
        with _cache_kwarg_renamed(self.bridge), warnings.catch_warnings():
            # the bridge hands HF `past_key_values`, which transformers 5 renames `cache` (still accepted)
            warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
            kwargs = {} if last_logits is None else {"logits_to_keep": last_logits}
            logits, cache = self.bridge(tokens.to(self.device), return_type="logits_and_cache",
                                        past_key_values=cache, **kwargs)
        return logits, cache

    def capture_block_inputs(self, tokens: Tokens) -> BlockInputs:
        """One forward recording each block's extra arguments, its input residual and its
        attention keys/values (through a recording `layer_past` cache the bridge's attention
        calls `update` on; the values pass through unchanged)."""
        return capture(list(self.bridge.blocks), lambda: self.bridge(tokens.to(self.device), return_type=None),
                       tokens.shape[0], record_kv=True)

    def forward_from(self, layer: int, resid_pre: Residual, block_inputs: BlockInputs,
                     start_pos: int = 0, end_layer: int | None = None) -> Residual:
        """Run blocks `layer..` on `resid_pre` (batch = k * block_inputs.batch, copies stacked
        block-major) and return the final residual (the final norm's input).

        With `start_pos` > 0, `resid_pre` holds only positions `start_pos..` and the earlier
        positions' keys/values come from the captured forward: exact when nothing before
        `start_pos` was changed, and about (T - start_pos) / T of the cost. With `end_layer`,
        stop before that block and return the residual entering it."""
        return resume(list(self.bridge.blocks), layer, resid_pre, block_inputs, start_pos, end_layer)

    # -- weights -----------------------------------------------------------------------------
    def _final_norm_module(self) -> nn.Module:
        ln = self.bridge.ln_final
        mod: nn.Module = getattr(ln, "original_component", None) or ln._original_component
        return mod

    def final_norm(self) -> FinalNorm:
        mod = self._final_norm_module()
        with weights_materialized(mod):  # offloaded weights: read on the module's execution device
            return self._final_norm_of(mod)

    @staticmethod
    def _final_norm_of(mod: nn.Module) -> FinalNorm:
        if isinstance(mod, nn.LayerNorm):
            return FinalNorm("layernorm", mod.weight.detach(), mod.bias.detach() if mod.bias is not None else None,
                             mod.eps)
        eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None)
        if eps is None or getattr(mod, "bias", None) is not None:
            raise NotImplementedError(f"final norm {type(mod).__name__} is neither LayerNorm nor a plain RMSNorm")
        weight: Any = mod.weight
        return FinalNorm("rms", weight.detach(), None, float(eps))

    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        lm_head = self.hf_model.get_output_embeddings()
        with weights_materialized(lm_head):
            if self._W_U is None:
                self._W_U = self.bridge.W_U.detach().clone() if self._dispatched else self.bridge.W_U.detach()
            b_U = getattr(self.bridge.unembed, "b_U", None)
            b = getattr(lm_head, "bias", None)
            bias = b.detach().clone() if b is not None else (b_U.detach().clone() if isinstance(b_U, torch.Tensor)
                                                             else None)
        return self._W_U, bias

    def unembed(self, final_resid: FinalResidual, columns: Columns | None = None) -> ColumnLogits:
        """The model's own output head on the final residual: its final norm module, lm_head
        (only `columns` when given) and the family's tail (logit scale, final softcap),
        checked at load to reproduce the full forward's logits."""
        if not self.output_head_error <= 1e-4:
            raise UnsupportedError(
                f"the output head of {self.spec.architecture} ({self.facts.model_type}) could not be "
                f"reproduced from the final residual (relative error {self.output_head_error:.1e} with "
                f"{self.facts.tail.describe()}); analyses that read logits from a resumed forward refuse"
            )
        return self._unembed_unchecked(final_resid, columns)

    def _unembed_unchecked(self, final_resid: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        # The model's own norm module (not the hooked bridge one) keeps this bit-identical to the
        # full forward without firing ln_final hooks.
        x = self._final_norm_module()(final_resid)
        logits: torch.Tensor = self.facts.tail.apply(project(x, *self.unembed_matrix(), columns))
        return logits

    def final_norm_module(self) -> nn.Module:
        return self._final_norm_module()

    def post_norm_module(self, layer: int, which: str) -> nn.Module | None:
        """The norm applied to the attention ("attn") or MLP ("mlp") output before the
        residual add (Gemma 2/3, OLMo 2), or None."""
        path = self.facts.attn_post_norm if which == "attn" else self.facts.mlp_post_norm
        return self.hf_model.get_submodule(path.format(layer=layer)) if path else None

    def out_proj_bias(self, layer: int) -> torch.Tensor | None:
        """The attention output projection's bias (d_model,), or None."""
        o = self.bridge.blocks[layer].attn.o
        mod = getattr(o, "original_component", None) or o._original_component
        return module_tensor(mod, "bias")

    def attention_softcap(self, layer: int) -> float | None:
        cap: float | None = self.facts.attn_softcap
        return cap

    def attention_scale(self, layer: int) -> float:
        attn = self.bridge.blocks[layer].attn
        hf_attn = getattr(attn, "original_component", None) or attn._original_component
        for attr in SCALE_ATTRS:
            scale = getattr(hf_attn, attr, None)
            if isinstance(scale, int | float):
                return float(scale)
        return attention_scale_from_config(self.hf_model.config, layer, self.spec.d_head)

    def W_O(self, layer: int) -> torch.Tensor:
        if self._dispatched:  # blocks on several devices (or offloaded): one layer at a time, on its device
            if layer not in self._W_O_layers:
                attn = self.bridge.blocks[layer].attn
                with weights_materialized(attn):
                    self._W_O_layers[layer] = attn.W_O.detach().clone()
            return self._W_O_layers[layer]
        if self._W_O is None:
            self._W_O = self.bridge.W_O.detach()  # (layer, head, d_head, d_model)
        return self._W_O[layer]

    def qkv_weights(self, layer: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Per kind ("q", "k", "v"): the projection's per-head weight (heads, d_model, d_head) and
        bias (heads, d_head) or None, such that the `q` / `k` / `v` site of `layer` is
        attn_in @ W[h] + b[h] for each head h (key / value heads under grouped-query attention).
        Under a device map, read once per layer on the layer's device and kept."""
        if layer in self._qkv:
            return self._qkv[layer]
        attn = self.bridge.blocks[layer].attn
        with weights_materialized(attn):
            out = {}
            for kind in ("q", "k", "v"):
                w = getattr(attn, f"W_{kind.upper()}").detach()
                b = getattr(attn, f"b_{kind.upper()}", None)
                b = None if b is None else b.detach()
                out[kind] = (w.clone(), None if b is None else b.clone()) if self._dispatched else (w, b)
        if self._dispatched:
            self._qkv[layer] = out
        return out


@contextmanager
def _cache_kwarg_renamed(bridge: Any) -> Iterator[None]:
    """Transformers 5 hands each attention its cache as `cache=`; the bridge's attention reads
    `past_key_values` / `layer_past` and otherwise silently attends to the new tokens only.
    Rename it for the duration of a cached forward (pre-hooks removed in `finally`)."""

    def pre(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            # Both names: bridges that re-implement attention read `past_key_values`, bridges
            # that delegate to the HF module (GPT-J) pass `cache` on to it.
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    handles = [block.attn.register_forward_pre_hook(pre, with_kwargs=True) for block in bridge.blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _LensRemoval:
    """Removes one hook added with `HookPoint.add_hook` (and its entry in the point's list)."""

    def __init__(self, point: Any, handle: Any) -> None:
        self.point, self.handle = point, handle

    def remove(self) -> None:
        self.handle.hook.remove()
        if self.handle in self.point.fwd_hooks:
            self.point.fwd_hooks.remove(self.handle)
