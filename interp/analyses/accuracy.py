"""Task performance: does the model give the answer, and by how much over the distractor.

Per prompt: the logit difference logit(answer) - logit(distractor) on the clean prompt and on
its corruption, whether the clean prompt's top-1 next token is the answer, and p(answer).
"""

from __future__ import annotations

import torch

from interp.analyses.results import AccuracyResult
from interp.core.metrics import Targets, get_metric, readout
from interp.core.model import HookedModel
from interp.data.pairs import PairDataset, TokenizedPairs


@torch.no_grad()
def task_accuracy(model: HookedModel, pairs: TokenizedPairs, dataset: PairDataset) -> AccuracyResult:
    n = pairs.n
    clean_ld, corrupt_ld, prob = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    top1 = torch.zeros(n, dtype=torch.bool)
    top1_tokens = [""] * n
    for pb in pairs.by_length().batches:
        targets = Targets(pb.answer_ids, pb.distractor_ids)
        ld, p = (readout(get_metric(name), targets) for name in ("logit_diff", "prob"))
        last = model.forward(pb.clean.to(model.device))[:, -1].float().cpu()
        clean_ld[pb.indices] = ld.score_vocab(last)
        prob[pb.indices] = p.score_vocab(last)
        best = last.argmax(-1)
        top1[pb.indices] = best == pb.answer_ids
        for i, tok in zip(pb.indices, best.tolist(), strict=True):
            top1_tokens[i] = model.tokenizer.decode([tok])
        corrupt_ld[pb.indices] = ld.score_vocab(model.forward(pb.corrupt.to(model.device))[:, -1].float().cpu())
    return AccuracyResult(clean_ld, corrupt_ld, top1, prob, top1_tokens, [p.clean for p in dataset.pairs])
