"""The port between analyses and models: `HookedModel`.

Analyses talk only to this interface; backends (TransformerLens bridge, nnsight) implement it
in `interp.models.backends`. It is deliberately small: tokenise, run with temporary hooks, cache
selected sites, resume a forward from a layer (for prefix reuse in sweeps), unembed the final
residual for a few token columns, and expose the few weights DLA needs.

    model = load_model("tiny-llama")
    logits, cache = model.run_with_cache(tokens, [Site("z", layer=1)])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.core.errors import InterpError, UnsupportedError
from interp.core.hooks import Handle, HookFn, caching_hooks, temporary_hooks
from interp.core.sites import Site


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    architecture: str


@dataclass(frozen=True)
class FinalNorm:
    """The final normalisation, enough to apply it with a frozen scale (DLA)."""

    kind: str  # "rms" | "layernorm"
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float


@dataclass
class BlockInputs:
    """The extra arguments the model passes to each block, captured from one real forward, so
    a forward can resume at any block with a batch made of several copies of that input."""

    batch: int
    per_layer: list[tuple[tuple, dict[str, Any]]]
    resid_pre: list[torch.Tensor]  # the residual entering each block in that forward
    # Per-block attention keys/values of that forward, (batch, kv_head, pos, d_head), when the
    # backend can resume at a later position with them (None otherwise).
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def resumes_at_position(self) -> bool:
        return self.kv is not None


class HookedModel(ABC):
    name: str
    spec: ModelSpec
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str | None
    backend: str
    prepend_bos: bool = False
    facts: Any = None  # the family's `interp.models.arch.ArchFacts` (None: unknown)

    # -- backend primitives ----------------------------------------------------------------
    @abstractmethod
    def add_hook(self, site: Site, fn: HookFn) -> Handle: ...

    @abstractmethod
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, pos, vocab) for a batch of equal-length token rows."""

    def capture_block_inputs(self, tokens: torch.Tensor) -> BlockInputs:
        raise NotImplementedError(f"backend {self.backend!r} cannot resume a forward at a layer")

    def forward_from(
        self, layer: int, resid_pre: torch.Tensor, block_inputs: BlockInputs, start_pos: int = 0,
        end_layer: int | None = None,
    ) -> torch.Tensor:
        """Run blocks `layer..` on `resid_pre` (batch = k * block_inputs.batch, copies stacked
        block-major) and return the final residual (the final norm's input).

        With `start_pos` > 0, `resid_pre` holds only positions `start_pos..` and the earlier
        positions' keys/values come from the captured forward (`block_inputs.kv`): exact when
        nothing before `start_pos` was changed, and about (T - start_pos) / T of the cost.
        With `end_layer`, stop before that block and return the residual entering it."""
        raise NotImplementedError(f"backend {self.backend!r} cannot resume a forward at a layer")

    def forward_incremental(
        self, tokens: torch.Tensor, past: Any = None, *, last_logits: int | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Forward `tokens` after the positions already held in `past` (a key/value cache from
        an earlier call, or None to start) and return (logits, cache). Hooks fire on the new
        positions only; attention patterns and scores span (new queries, all keys). Chunked
        prefill and greedy decoding are built on it. With `last_logits=n`, only the last n
        positions are unembedded (the rest of a long chunk's logits are never needed)."""
        raise NotImplementedError(f"backend {self.backend!r} has no key/value-cached forward")

    def final_norm(self) -> FinalNorm:
        raise NotImplementedError(f"backend {self.backend!r} exposes no final norm")

    def final_norm_module(self) -> Any:
        """The model's own final norm module (DLA reads it as an affine map)."""
        raise UnsupportedError(f"backend {self.backend!r} exposes no final norm module")

    def post_norm_module(self, layer: int, which: str) -> Any:
        """The norm applied to the attention ("attn") or MLP ("mlp") output of `layer` before
        the residual add (Gemma 2/3, OLMo 2), or None where the family has none."""
        raise UnsupportedError(f"backend {self.backend!r} exposes no post-sublayer norms")

    def out_proj_bias(self, layer: int) -> torch.Tensor | None:
        """The attention output projection's bias (d_model,), or None."""
        raise UnsupportedError(f"backend {self.backend!r} exposes no attention output bias")

    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_U (d_model, vocab), b_U (vocab,) or None)."""
        raise NotImplementedError(f"backend {self.backend!r} exposes no unembedding")

    def attention_scale(self, layer: int) -> float:
        """The factor on q.k before the softmax (1/sqrt(d_head) unless the model says otherwise)."""
        return self.spec.d_head**-0.5

    def W_O(self, layer: int) -> torch.Tensor:
        """Per-head output weights (n_heads, d_head, d_model)."""
        raise NotImplementedError(f"backend {self.backend!r} exposes no W_O")

    def attention_softcap(self, layer: int) -> float | None:
        """The score softcap (Gemma 2), or None."""
        return None

    def supports(self, component: str) -> bool:
        """Whether `component` can be read and written on this model (per-layer site checks)."""
        try:
            self.validate_site(Site(component, layer=0) if component not in ("embed", "resid_final")
                               else Site(component))
        except InterpError:
            return False
        return True

    def validate_site(self, site: Site) -> None:
        """Raise `SiteError` if `site` (with its head/position) does not exist in this model.
        Backends without a cheap check accept every site here and fail in the forward."""
        return None

    # -- derived helpers (shared by all backends) ------------------------------------------
    def hooks(self, hooks: Sequence[tuple[Site, HookFn]]):
        return temporary_hooks(self, hooks)

    def run_with_hooks(self, tokens: torch.Tensor, hooks: Sequence[tuple[Site, HookFn]]) -> torch.Tensor:
        with self.hooks(hooks):
            return self.forward(tokens)

    def run_with_cache(
        self, tokens: torch.Tensor, sites: Sequence[Site], *, hooks: Sequence[tuple[Site, HookFn]] = ()
    ) -> tuple[torch.Tensor, dict[Site, torch.Tensor]]:
        for site in sites:
            self.validate_site(site)
        store: dict[Site, torch.Tensor] = {}
        with self.hooks([*hooks, *caching_hooks(sites, store)]):
            logits = self.forward(tokens)
        missing = [str(s) for s in sites if s not in store]
        if missing:
            raise RuntimeError(f"sites not reached in the forward pass: {', '.join(missing)}")
        return logits, store

    def to_tokens(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (batch, pos) of equal-length texts, without special tokens (BOS if the
        model's `prepend_bos` says so)."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t) for t in texts]
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"texts have different token lengths {sorted(lengths)}; batch them by length")
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.prepend_bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids

    def str_tokens(self, tokens: torch.Tensor | Sequence[int]) -> list[str]:
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return [self.tokenizer.decode([i]) for i in ids]

    def unembed(self, final_resid: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the final residual (..., d_model), only for `columns` when given."""
        norm = self.final_norm()
        x = apply_final_norm(final_resid, norm)
        W_U, b_U = self.unembed_matrix()
        if columns is not None:
            W_U = W_U[:, columns]
            b_U = b_U[columns] if b_U is not None else None
        out = x @ W_U
        return out + b_U if b_U is not None else out


def apply_final_norm(x: torch.Tensor, norm: FinalNorm) -> torch.Tensor:
    if norm.kind == "rms":
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + norm.eps) * norm.weight
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    out = (x - mu) * torch.rsqrt(var + norm.eps) * norm.weight
    return out + norm.bias if norm.bias is not None else out
