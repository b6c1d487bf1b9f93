"""nnsight backend: sites read from the Hugging Face modules inside one nnsight trace.

`NNsightModel` wraps an already-loaded HF model with nnsight 0.8's `TransformersModel` (the
non-deprecated name of `LanguageModel`; no hub access) and reads activations as nnsight proxies
(`.input` / `.output` + `.save()`), not through torch hooks. Which module carries which site is
data, one table per family (`interp.models.families`, every family of the conformance zoo).
Tensors come out in the same layouts as the TransformerLens backend: z is (batch, pos, head,
d_head), i.e. the input of the attention output projection split into heads; residual-stream
sites are (batch, pos, d_model); the pattern is (batch, head, query, key). Each module value is
copied when the module returns, so a later in-place update by the model (Falcon adds the
attention output into the MLP's output tensor) does not reach the cache.

Writing too: `add_hook` puts a torch (pre-)hook on the module the family table names
(`interp.models.backends.modules`), so a hook function that returns a replacement writes it;
`run_with_cache` with hooks attached runs through them. The model is `Resumable`:
`capture_block_inputs` / `forward_from` call the HF decoder layers directly with the arguments
captured from one real forward (`interp.models.backends.resume`), so patching sweeps run here as
on the TransformerLens backend (always from position 0: no key/value prefix reuse).

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
from interp.core.hooks import Handle, HookFn
from interp.core.model import BlockInputs, FinalNorm, ModelSpec, apply_final_norm
from interp.core.sites import Component, Site
from interp.core.types import ColumnLogits, Columns, FinalResidual, Logits, Residual, Tokens
from interp.models.arch import arch_facts
from interp.models.backends.base import HookedLM, project
from interp.models.backends.modules import CountedHandle, ModuleSite, add_module_hook
from interp.models.backends.resume import capture, resume
from interp.models.families import family_of
from interp.models.placement import module_tensor, weights_materialized

_HEAD_COMPONENTS = (Component.Z, Component.Q, Component.K, Component.V)

# One module value read in a trace: (module path, "input" | "output").
_Access = tuple[str, str]


class NNsightModel(HookedLM):
    backend = "nnsight"

    def __init__(self, name: str, hf_model: Any, tokenizer: Any, *, weights_sha256: str | None,
                 prepend_bos: bool = False):
        from nnsight.modeling.transformers import TransformersModel

        # Fails early, with the supported families, before nnsight touches the model.
        self.sites_table: dict[Component, ModuleSite] = family_of(hf_model)
        hf_model.eval()
        self.hf_model = hf_model
        self.lm = TransformersModel(hf_model, task="text-generation", tokenizer=tokenizer)
        self._identify(name, hf_model, tokenizer, weights_sha256, prepend_bos)
        self.spec = _spec_from_config(hf_model)
        # Layerless rows listed before the first per-layer row run before every block.
        first_layered = next(i for i, (path, _, _) in enumerate(self.sites_table.values()) if "{layer}" in path)
        self._rank = {c: i for i, c in enumerate(self.sites_table)}
        self._before_blocks = {c for c, i in self._rank.items() if i < first_layered}
        self._final_norm: FinalNorm | None = None
        self.facts = arch_facts(hf_model)
        self._live_hooks = 0  # hooks attached now: reads then go through them, not a trace

    # -- sites -------------------------------------------------------------------------------
    def _access(self, site: Site) -> tuple[tuple[int, int], _Access, int | None]:
        """(execution-order key, module access, tuple index) of the whole tensor carrying `site`."""
        comp = site.component
        if comp not in self.sites_table:
            allowed = ", ".join(c.value for c in self.sites_table)
            raise SiteError(
                f"site {site}: component {comp.value!r} is not readable through nnsight for "
                f"{self.spec.architecture}; allowed: {allowed}"
            )
        self.check_range(site)
        path, io, index = self.sites_table[comp]
        if site.layer is not None:
            layer_key = site.layer
        else:
            layer_key = -1 if comp in self._before_blocks else self.spec.n_layers
        return (layer_key, self._rank[comp]), (path.format(layer=site.layer), io), index

    def validate_site(self, site: Site) -> None:
        self._access(site)

    def _envoy(self, path: str) -> Any:
        env: Any = self.lm
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def _to_layout(self, site: Site, value: Any) -> torch.Tensor:
        if value is None and site.component is Component.PATTERN:
            raise SiteError(
                f"site {site}: the attention module returned no weights; only eager attention "
                "returns them (load the model with attn_implementation='eager')"
            )
        if not isinstance(value, torch.Tensor):
            raise RuntimeError(f"site {site}: the module value is a {type(value).__name__}, not a tensor")
        if site.component in _HEAD_COMPONENTS:  # (batch, pos, heads * d_head) -> (batch, pos, head, d_head)
            value = value.view(*value.shape[:-1], -1, self.spec.d_head)
        out: torch.Tensor = value
        return out

    # -- forwards ----------------------------------------------------------------------------
    def forward(self, tokens: Tokens) -> Logits:
        with self.lm.trace(tokens.to(self.device), use_cache=False):
            logits: torch.Tensor = self.lm.output.logits.save()
        return logits

    def run_with_cache(
        self, tokens: Tokens, sites: Sequence[Site], *, hooks: Sequence[tuple[Site, HookFn]] = ()
    ) -> tuple[torch.Tensor, dict[Site, torch.Tensor]]:
        """Logits and the asked-for sites, all read in one nnsight trace."""
        import nnsight

        if hooks or self._live_hooks:
            return super().run_with_cache(tokens, sites, hooks=hooks)
        wanted = {s: self._access(s) for s in sites}
        # nnsight 0.8 reads module values in execution order: request them sorted, each module
        # value once (attn_out and pattern are two elements of one attention output).
        order: dict[_Access, tuple[int, int]] = {}
        parts: dict[_Access, set[int | None]] = {}
        for key, acc, index in wanted.values():
            order[acc] = min(key, order.get(acc, key))
            parts.setdefault(acc, set()).add(index)
        accesses = sorted(order, key=order.__getitem__)
        saved: dict[tuple[str, str, int | None], Any] = {}
        with self.lm.trace(tokens.to(self.device), use_cache=False):
            for acc in accesses:
                path, io = acc
                value = getattr(self._envoy(path), io)
                for index in parts[acc]:
                    saved[(path, io, index)] = nnsight.save(_copy(_element(value, index)))
            logits = self.lm.output.logits.save()
        cache = {}
        for site, (_, acc, index) in wanted.items():
            whole = self._to_layout(site, saved[(*acc, index)])
            cache[site] = site.select(whole).detach()
        return logits, cache

    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        """A torch hook on the module carrying `site` (`interp.models.backends.modules`)."""
        self._access(site)
        row = self.sites_table[site.component]
        d_head = self.spec.d_head if site.component in _HEAD_COMPONENTS else None
        handle = add_module_hook(self.hf_model, row, site, fn, d_head=d_head)
        return CountedHandle(self, handle)

    # -- resuming at a block -----------------------------------------------------------------
    def _blocks(self) -> list[nn.Module]:
        path = self.sites_table[Component.RESID_PRE][0]
        return [self.hf_model.get_submodule(path.format(layer=i)) for i in range(self.spec.n_layers)]

    def capture_block_inputs(self, tokens: Tokens) -> BlockInputs:
        """One plain forward recording each decoder layer's input and extra arguments."""
        return capture(self._blocks(), lambda: self.hf_model(tokens.to(self.device), use_cache=False),
                       tokens.shape[0], record_kv=False)

    def forward_from(self, layer: int, resid_pre: Residual, block_inputs: BlockInputs,
                     start_pos: int = 0, end_layer: int | None = None) -> Residual:
        """Decoder layers `layer..` on `resid_pre` (k stacked copies of the captured batch): the
        final residual, or the residual entering `end_layer`. Only from position 0."""
        return resume(self._blocks(), layer, resid_pre, block_inputs, start_pos, end_layer)

    # -- weights -----------------------------------------------------------------------------
    def final_norm_module(self) -> nn.Module:
        mod: nn.Module = self.hf_model.get_submodule(self.sites_table[Component.RESID_FINAL][0])
        return mod

    def final_norm(self) -> FinalNorm:
        """The final norm as LayerNorm / RMSNorm parameters, checked against the module itself:
        also Gemma's ``x * (1 + w)`` RMSNorm, Cohere's bias-free and OLMo's parameter-free
        LayerNorm."""
        if self._final_norm is None:
            mod = self.final_norm_module()
            with weights_materialized(mod):  # offloaded weights: read on the module's execution device
                self._final_norm = _final_norm_of(mod, self.spec.d_model)
        return self._final_norm

    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """lm_head's (W_U (d_model, vocab), b_U or None), as the model stores them: a logit scale
        or final softcap in the model's head is applied by `unembed`, not folded in here."""
        lm_head = self.hf_model.get_output_embeddings()
        if lm_head is None or not isinstance(getattr(lm_head, "weight", None), torch.Tensor):
            raise NotImplementedError(f"{self.spec.architecture} has no linear output embedding (lm_head)")
        w = module_tensor(lm_head, "weight")
        assert w is not None
        return w.T, module_tensor(lm_head, "bias")

    def unembed(self, final_resid: FinalResidual, columns: Columns | None = None) -> ColumnLogits:
        """Logits from the final residual: the model's final norm module, lm_head (only
        `columns` when given), then the family's tail (logit scale, final softcap)."""
        x = self.final_norm_module()(final_resid)
        logits: torch.Tensor = self.facts.tail.apply(project(x, *self.unembed_matrix(), columns))
        return logits

    def post_norm_module(self, layer: int, which: str) -> nn.Module | None:
        path = self.facts.attn_post_norm if which == "attn" else self.facts.mlp_post_norm
        return self.hf_model.get_submodule(path.format(layer=layer)) if path else None

    def out_proj_bias(self, layer: int) -> torch.Tensor | None:
        mod = self.hf_model.get_submodule(self.sites_table[Component.Z][0].format(layer=layer))
        return module_tensor(mod, "bias")

    def W_O(self, layer: int) -> torch.Tensor:
        """(n_heads, d_head, d_model) from the module whose input is z."""
        if not 0 <= layer < self.spec.n_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.spec.n_layers - 1}")
        path = self.sites_table[Component.Z][0].format(layer=layer)
        mod = self.hf_model.get_submodule(path)
        weight = module_tensor(mod, "weight")  # a copy, made now, where the module is offloaded
        assert weight is not None
        # nn.Linear (and subclasses such as FalconLinear) stores (out, in); GPT-2's Conv1D (in, out).
        if isinstance(mod, nn.Linear):
            w = weight.T
        elif type(mod).__name__ == "Conv1D":
            w = weight
        else:
            raise NotImplementedError(f"{path} is a {type(mod).__name__}, neither nn.Linear nor Conv1D; no W_O")
        H, d, D = self.spec.n_heads, self.spec.d_head, self.spec.d_model
        if tuple(w.shape) != (H * d, D):
            raise NotImplementedError(f"{path} weight (in, out) is {tuple(w.shape)}, not ({H * d}, {D}); no W_O")
        return w.reshape(H, d, D)


def _element(value: Any, index: int | None) -> Any:
    # Index only into a tuple/list: decoder layers return a tensor in transformers 5, a tuple before.
    return value[index] if index is not None and isinstance(value, tuple | list) else value


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _spec_from_config(hf_model: Any) -> ModelSpec:
    # HF attribute maps give GPT-2/GPT-J's n_layer/n_head/n_embd and GPT-Neo's num_layers/num_heads
    # these names.
    cfg = hf_model.config
    n_heads = cfg.num_attention_heads
    d_model = cfg.hidden_size
    archs = getattr(cfg, "architectures", None)
    return ModelSpec(
        n_layers=cfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=_n_kv_heads(cfg),
        d_model=d_model,
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads,
        d_vocab=cfg.vocab_size,
        architecture=archs[0] if archs else type(hf_model).__name__,
        n_ctx=getattr(cfg, "max_position_embeddings", None),
    )


def _n_kv_heads(cfg: Any) -> int:
    if getattr(cfg, "model_type", None) == "falcon":
        # Falcon: the new decoder architecture has `num_kv_heads` groups; otherwise multi-query
        # means one key/value head and plain multi-head attention one per query head.
        if getattr(cfg, "new_decoder_architecture", False):
            return int(cfg.num_kv_heads)
        return 1 if getattr(cfg, "multi_query", False) else cfg.num_attention_heads
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


@torch.no_grad()
def _final_norm_of(mod: nn.Module, d_model: int) -> FinalNorm:
    """The first of LayerNorm(w, b), RMSNorm(w), RMSNorm(1 + w) that reproduces `mod` on a
    probe input; a module without a weight (OLMo) has w = 1, without an eps attribute 1e-5
    (OLMo's hard-coded value)."""
    p = next(iter(mod.parameters()), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    w = getattr(mod, "weight", None)
    w = w.detach() if isinstance(w, torch.Tensor) else torch.ones(d_model, device=dev, dtype=dt)
    b = getattr(mod, "bias", None)
    b = b.detach() if isinstance(b, torch.Tensor) else None
    eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None) or 1e-5
    candidates = [FinalNorm("layernorm", w, b, float(eps))]
    if b is None:
        candidates += [FinalNorm("rms", w, None, float(eps)), FinalNorm("rms", w + 1, None, float(eps))]
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, d_model, generator=gen) * 3 + 1).to(dev, dt)
    want = mod(x).float()
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    for cand in candidates:
        if float((apply_final_norm(x, cand).float() - want).abs().max()) <= tol:
            return cand
    raise NotImplementedError(
        f"final norm {type(mod).__name__} is none of LayerNorm, RMSNorm or (1 + w) RMSNorm; "
        "no FinalNorm for it"
    )
