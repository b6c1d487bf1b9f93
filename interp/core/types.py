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
TokenIds = Int[Tensor, " batch"]  # one token id per prompt (an answer)
TokenIdTable = Int[Tensor, "batch ..."]  # one or more token ids per prompt (e.g. four letters)
SelectedLogits = Float[Tensor, "batch column"]  # last-position logits of some columns
OptionLogits = Float[Tensor, "batch option"]  # logits of each prompt's answer options
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
    "TokenIds",
    "TokenIdTable",
    "SelectedLogits",
    "OptionLogits",
    "FinalResidual",
    "Columns",
    "ColumnLogits",
    "Head",
    "Float",
    "Int",
    "Tensor",
]
