"""Prompt datasets: the IOI generator and JSONL prompt pairs."""

from interp.data.ioi import IOI_TEMPLATES, generate_ioi, single_token_names
from interp.data.pairs import (
    PairBatch,
    PairDataset,
    PromptPair,
    TokenizedPairs,
    load_jsonl,
    save_jsonl,
    tokenize_pairs,
)

__all__ = [
    "IOI_TEMPLATES",
    "generate_ioi",
    "single_token_names",
    "PairBatch",
    "PairDataset",
    "PromptPair",
    "TokenizedPairs",
    "load_jsonl",
    "save_jsonl",
    "tokenize_pairs",
]
