"""Tensor type aliases used on public signatures (jaxtyping)."""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos vocab"]
LastLogits = Float[Tensor, "batch vocab"]
Residual = Float[Tensor, "batch pos d_model"]
HeadActs = Float[Tensor, "batch pos head d_head"]
Pattern = Float[Tensor, "batch head query key"]
PerPrompt = Float[Tensor, " batch"]

__all__ = [
    "Tokens",
    "Logits",
    "LastLogits",
    "Residual",
    "HeadActs",
    "Pattern",
    "PerPrompt",
    "Float",
    "Int",
    "Tensor",
]
