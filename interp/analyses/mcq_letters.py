"""MCQ option letters: their token ids, where the labels sit in a prompt, and the letter
metric (`letter_logit_diff` / `letter_accuracy` in `interp.core.metrics`)."""

from __future__ import annotations

import torch

from interp.core.errors import InterpError
from interp.core.metrics import Targets, letter_scores
from interp.core.types import Float, Int, Tensor
from interp.data.pairs import PairBatch, PairDataset


def _token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InterpError(f"label {text!r} is {len(ids)} tokens; MCQ labels must be single tokens")
    return ids[0]


def letter_ids(tokenizer, dataset: PairDataset) -> tuple[Int[Tensor, "n option"], Int[Tensor, " n"]]:
    """(answer-form ids of the four option letters (n, 4), index of the correct one (n,))."""
    ids, correct = [], []
    for i, p in enumerate(dataset):
        if "letter_tokens" not in p.meta or "correct_index" not in p.meta:
            raise InterpError(f"pair {i} has no MCQ meta (letter_tokens, correct_index); "
                              "use interp.data.mcq.generate_mcq")
        ids.append([_token_id(tokenizer, t) for t in p.meta["letter_tokens"]])
        correct.append(p.meta["correct_index"])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(correct, dtype=torch.long)


def label_positions(tokenizer, dataset: PairDataset, pb: PairBatch) -> Int[Tensor, "n option"]:
    """Position of each option's label token in the batch's clean prompts: (n, 4).

    The label as written in the options (``B`` in ``blue (B)`` or ``B.``), its last occurrence
    before the final position."""
    out = torch.empty(len(pb), 4, dtype=torch.long)
    T = pb.clean.shape[1]
    for row, i in enumerate(pb.indices):
        labels = dataset[i].meta["labels"]
        toks = pb.clean[row, : T - 1]
        for j, lab in enumerate(labels):
            hits = (toks == _token_id(tokenizer, lab)).nonzero().flatten()
            if hits.numel() == 0:
                raise InterpError(f"pair {i}: label {lab!r} not found in the prompt")
            out[row, j] = hits[-1]
    return out



def letter_targets(ids: Int[Tensor, "n option"], correct: Int[Tensor, " n"]) -> Targets:
    """Metric targets of MCQ prompts: the correct letter as the answer, all four as `letters`."""
    return Targets(ids[torch.arange(ids.shape[0]), correct], extra={"letters": ids})


def _letter_metrics(letter_logits: Float[Tensor, "n option"],
                    correct: Int[Tensor, " n"]) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """(correct minus mean of the other letters, top-1 among the letters is correct) per prompt."""
    return letter_scores(letter_logits, correct)
