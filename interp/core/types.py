"""Type aliases used on public signatures: tensor shapes (jaxtyping) and the few plain tuples
every analysis shares (one definition each)."""

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
FinalResidual = Float[Tensor, "*batch d_model"]  # the final norm's input, any leading axes
Columns = Int[Tensor, " column"]  # token ids whose logits are wanted
ColumnLogits = Float[Tensor, "*batch _"]  # logits of all the vocabulary or of some columns

Head = tuple[int, int]  # (layer, head)

__all__ = [
    "Tokens",
    "Logits",
    "LastLogits",
    "Residual",
    "HeadActs",
    "Pattern",
    "PerPrompt",
    "FinalResidual",
    "Columns",
    "ColumnLogits",
    "Head",
    "Float",
    "Int",
    "Tensor",
]
