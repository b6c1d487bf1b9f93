"""`HookedLM`: what every text backend shares on top of the `HookedModel` port.

Tokenising, temporary hooks, the cached and hooked forwards (built on `add_hook` and `forward`
alone), the site range check, and the generic unembedding from a `FinalNorm` (backends whose
output head is more than norm + lm_head override `unembed`). Capabilities (`Resumable`,
`Incremental`, `Unembedding`, ...) are not declared here: a backend has one by defining its
methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from interp.core.errors import InterpError
from interp.core.hooks import Handle, HookFn, caching_hooks, temporary_hooks
from interp.core.model import (
    KV_COMPONENTS,
    FinalNorm,
    ModelSpec,
    apply_final_norm,
    check_site_range,
)
from interp.core.sites import Component, Site
from interp.core.types import ColumnLogits, Columns, FinalResidual, Logits, Tokens
from interp.models.placement import input_device


class HookedLM:
    """Base of the text backends (TransformerLens bridge, nnsight)."""

    name: str
    spec: ModelSpec
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str | None
    backend: str
    prepend_bos: bool = False
    facts: Any = None  # the family's `interp.models.arch.ArchFacts` (None: unknown)

    def _identify(self, name: str, hf_model: Any, tokenizer: Any, weights_sha256: str | None,
                  prepend_bos: bool) -> None:
        """The fields every backend sets from its wrapped HF model (dtype from its parameters;
        device: where token ids go, the input embedding's execution device under a device map)."""
        self.name = name
        self.tokenizer = tokenizer
        self.weights_sha256 = weights_sha256
        self.prepend_bos = prepend_bos
        self.device, self.dtype = input_device(hf_model), next(hf_model.parameters()).dtype

    # -- primitives each backend defines ---------------------------------------------------------
    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        raise NotImplementedError

    def forward(self, tokens: Tokens) -> Logits:
        """Logits (batch, pos, vocab) for a batch of equal-length token rows."""
        raise NotImplementedError

    def final_norm(self) -> FinalNorm:
        raise NotImplementedError

    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_U (d_model, vocab), b_U (vocab,) or None)."""
        raise NotImplementedError

    # -- sites -----------------------------------------------------------------------------------
    def check_range(self, site: Site) -> None:
        """`SiteError` when `site`'s stack, layer, head or position cannot exist in this model."""
        n_heads = self.spec.n_kv_heads if site.component in KV_COMPONENTS else self.spec.n_heads
        check_site_range(site, n_layers=self.spec.n_layers, n_heads=n_heads, n_ctx=self.spec.n_ctx,
                         what=f"{self.spec.architecture}")

    def validate_site(self, site: Site) -> None:
        """Raise `SiteError` if `site` (with its head/position) does not exist in this model."""
        self.check_range(site)

    def supports(self, component: str) -> bool:
        """Whether `component` can be read and written on this model (per-layer site checks)."""
        try:
            self.validate_site(Site(component, layer=0) if component not in ("embed", "resid_final")
                               else Site(component))
        except InterpError:
            return False
        return True

    def attention_scale(self, layer: int) -> float:
        """The factor on q.k before the softmax (1/sqrt(d_head) unless the model says otherwise)."""
        return float(self.spec.d_head**-0.5)

    def attention_softcap(self, layer: int) -> float | None:
        """The score softcap (Gemma 2), or None."""
        return None

    # -- derived helpers -------------------------------------------------------------------------
    def hooks(self, hooks: Sequence[tuple[Site, HookFn]]) -> AbstractContextManager[None]:
        return temporary_hooks(self, hooks)

    def run_with_hooks(self, tokens: Tokens, hooks: Sequence[tuple[Site, HookFn]]) -> Logits:
        with self.hooks(hooks):
            return self.forward(tokens)

    def run_with_cache(
        self, tokens: Tokens, sites: Sequence[Site], *, hooks: Sequence[tuple[Site, HookFn]] = ()
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

    def to_tokens(self, texts: str | Sequence[str]) -> Tokens:
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
        ids: list[int] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.prepend_bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids

    def str_tokens(self, tokens: torch.Tensor | Sequence[int]) -> list[str]:
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return [str(self.tokenizer.decode([i])) for i in ids]

    def unembed(self, final_resid: FinalResidual, columns: Columns | None = None) -> ColumnLogits:
        """Logits from the final residual (..., d_model), only for `columns` when given."""
        return generic_unembed(self, final_resid, columns)


def generic_unembed(model: HookedLM, final_resid: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """final norm (as a `FinalNorm`) then W_U (+ b_U): the core formula DLA relies on (each
    step on the device of its weights: blocks may sit on different devices)."""
    norm = model.final_norm()
    x = apply_final_norm(final_resid.to(norm.weight.device), norm)
    return project(x, *model.unembed_matrix(), columns)


def project(x: torch.Tensor, W_U: torch.Tensor, b_U: torch.Tensor | None,
            columns: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W_U (+ b_U), only `columns` of them when given, on W_U's device (lm_head may sit on
    another device than the final norm, the column ids on the input device)."""
    if columns is not None:
        W_U = W_U[:, columns.to(W_U.device)]
        b_U = b_U[columns.to(b_U.device)] if b_U is not None else None
    out = x.to(W_U.device) @ W_U
    return out + b_U if b_U is not None else out


__all__ = ["Component", "HookedLM", "generic_unembed", "project"]
