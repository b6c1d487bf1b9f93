"""nnsight backend: sites read from the Hugging Face modules inside one nnsight trace.

`NNsightModel` wraps an already-loaded HF model with nnsight 0.8's `TransformersModel` (the
non-deprecated name of `LanguageModel`; no hub access) and reads activations as nnsight proxies
(`.input` / `.output` + `.save()`), not through torch hooks. Which module carries which site is
data, one table per family (`interp.models.families`). Tensors come out in the same layouts as
the TransformerLens backend: z is (batch, pos, head, d_head), i.e. the input of o_proj (Llama)
or c_proj (GPT-2) split into heads; residual-stream sites are (batch, pos, d_model).

Reading only. Interventions (`add_hook`, and so patching sweeps) are not implemented on this
backend yet; use ``backend="transformer_lens"`` for them.

    model = load_model("tiny-llama", backend="nnsight")
    logits, cache = model.run_with_cache(tokens, [Site("z", layer=1, head=2)])
    cache[Site("z", layer=1, head=2)].shape     # (batch, pos, d_head)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from interp.core.errors import SiteError
from interp.core.hooks import HookFn
from interp.core.model import FinalNorm, HookedModel, ModelSpec
from interp.core.sites import Component, Site
from interp.models.families import ModuleSite, family_of

_HEAD_COMPONENTS = (Component.Z, Component.Q, Component.K, Component.V)

# One module value read in a trace: (module path, "input" | "output", tuple index or None).
_Access = tuple[str, str, int | None]


class NNsightModel(HookedModel):
    backend = "nnsight"

    def __init__(self, name: str, hf_model: nn.Module, tokenizer: Any, *, weights_sha256: str | None,
                 prepend_bos: bool = False):
        from nnsight.modeling.transformers import TransformersModel

        # Fails early, with the supported families, before nnsight touches the model.
        self.sites_table: dict[Component, ModuleSite] = family_of(hf_model)
        hf_model.eval()
        self.hf_model = hf_model
        self.lm = TransformersModel(hf_model, task="text-generation", tokenizer=tokenizer)
        self.name = name
        self.tokenizer = tokenizer
        self.weights_sha256 = weights_sha256
        self.prepend_bos = prepend_bos
        p = next(hf_model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.spec = _spec_from_config(hf_model)
        # Layerless rows listed before the first per-layer row run before every block.
        first_layered = next(i for i, (path, _, _) in enumerate(self.sites_table.values()) if "{layer}" in path)
        self._rank = {c: i for i, c in enumerate(self.sites_table)}
        self._before_blocks = {c for c, i in self._rank.items() if i < first_layered}

    # -- sites -------------------------------------------------------------------------------
    def _access(self, site: Site) -> tuple[tuple[int, int], _Access]:
        """(execution-order key, module access) of the whole tensor carrying `site`."""
        comp = site.component
        if comp not in self.sites_table:
            allowed = ", ".join(c.value for c in self.sites_table)
            raise SiteError(
                f"site {site}: component {comp.value!r} is not readable through nnsight for "
                f"{self.spec.architecture}; allowed: {allowed}"
            )
        if site.layer is not None and not 0 <= site.layer < self.spec.n_layers:
            raise SiteError(f"site {site}: layer {site.layer} out of range 0..{self.spec.n_layers - 1}")
        n_heads = self.spec.n_kv_heads if comp in (Component.K, Component.V) else self.spec.n_heads
        if site.head is not None and not 0 <= site.head < n_heads:
            raise SiteError(f"site {site}: head {site.head} out of range 0..{n_heads - 1}")
        path, io, index = self.sites_table[comp]
        if site.layer is not None:
            layer_key = site.layer
        else:
            layer_key = -1 if comp in self._before_blocks else self.spec.n_layers
        return (layer_key, self._rank[comp]), (path.format(layer=site.layer), io, index)

    def _envoy(self, path: str):
        env = self.lm
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def _to_layout(self, site: Site, value: Any, index: int | None) -> torch.Tensor:
        if index is not None and isinstance(value, tuple | list):
            value = value[index]
        if not isinstance(value, torch.Tensor):
            raise RuntimeError(f"site {site}: the module value is a {type(value).__name__}, not a tensor")
        if site.component in _HEAD_COMPONENTS:  # (batch, pos, heads * d_head) -> (batch, pos, head, d_head)
            value = value.view(*value.shape[:-1], -1, self.spec.d_head)
        return value

    # -- forwards ----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with self.lm.trace(tokens.to(self.device), use_cache=False):
            logits = self.lm.output.logits.save()
        return logits

    def run_with_cache(
        self, tokens: torch.Tensor, sites: Sequence[Site], *, hooks: Sequence[tuple[Site, HookFn]] = ()
    ) -> tuple[torch.Tensor, dict[Site, torch.Tensor]]:
        """Logits and the asked-for sites, all read in one nnsight trace."""
        if hooks:
            raise NotImplementedError(_NO_HOOKS)
        wanted = {s: self._access(s) for s in sites}
        # nnsight 0.8 reads module values in execution order: request them sorted, once each.
        order: dict[_Access, tuple[int, int]] = {}
        for key, acc in wanted.values():
            order[acc] = key
        accesses = sorted(order, key=order.__getitem__)
        saved: dict[_Access, Any] = {}
        with self.lm.trace(tokens.to(self.device), use_cache=False):
            for acc in accesses:
                path, io, _ = acc
                saved[acc] = getattr(self._envoy(path), io).save()
            logits = self.lm.output.logits.save()
        cache = {}
        for site, (_, acc) in wanted.items():
            whole = self._to_layout(site, saved[acc], acc[2])
            cache[site] = site.select(whole).detach()
        return logits, cache

    def add_hook(self, site: Site, fn: HookFn):
        raise NotImplementedError(_NO_HOOKS)

    # -- weights -----------------------------------------------------------------------------
    def final_norm(self) -> FinalNorm:
        path = self.sites_table[Component.RESID_FINAL][0]
        mod = self.hf_model.get_submodule(path)
        if isinstance(mod, nn.LayerNorm):
            bias = mod.bias.detach() if mod.bias is not None else None
            return FinalNorm("layernorm", mod.weight.detach(), bias, mod.eps)
        eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None)
        if eps is None or getattr(mod, "bias", None) is not None:
            raise NotImplementedError(f"final norm {type(mod).__name__} is neither LayerNorm nor a plain RMSNorm")
        return FinalNorm("rms", mod.weight.detach(), None, float(eps))

    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        lm_head = self.hf_model.get_output_embeddings()
        b = getattr(lm_head, "bias", None)
        return lm_head.weight.detach().T, (b.detach() if b is not None else None)

    def W_O(self, layer: int) -> torch.Tensor:
        """(n_heads, d_head, d_model) from the module whose input is z."""
        path = self.sites_table[Component.Z][0].format(layer=layer)
        mod = self.hf_model.get_submodule(path)
        # nn.Linear stores (out, in); HF's GPT-2 Conv1D stores (in, out).
        w = mod.weight.detach().T if isinstance(mod, nn.Linear) else mod.weight.detach()
        return w.reshape(self.spec.n_heads, self.spec.d_head, self.spec.d_model)


_NO_HOOKS = (
    "the nnsight backend reads activations only; interventions (hooks, patching) through nnsight "
    "are not implemented yet. Load the model with backend='transformer_lens' for them."
)


def _spec_from_config(hf_model: nn.Module) -> ModelSpec:
    cfg = hf_model.config  # HF attribute maps give GPT-2's n_layer/n_head/n_embd these names
    n_heads = cfg.num_attention_heads
    d_model = cfg.hidden_size
    archs = getattr(cfg, "architectures", None)
    return ModelSpec(
        n_layers=cfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        d_model=d_model,
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads,
        d_vocab=cfg.vocab_size,
        architecture=archs[0] if archs else type(hf_model).__name__,
    )
