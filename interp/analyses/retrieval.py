"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality", arXiv 2404.15574; reference code nightdessert/Retrieval_Head).

While the model answers a needle-in-a-haystack question, at every step and for every query head
take the key the head attends to most from the current query. If that key lies in the needle's
answer span AND its token is the token just produced, the head *copied* it: add
1 / len(span). A trial's score per head is that sum; trials whose response has ROUGE-1 recall
> 0.5 against the answer are *kept*, and a head's retrieval score is its mean over kept trials.
Heads scoring > 0.1 are retrieval heads. Scores are per query head (GQA groups are not merged).

Two scorers, both one trial at a time with the prompt prefilled in key/value-cached chunks
(`HookedModel.forward_incremental`), so no full attention pattern over the prompt is ever held:

- `score_greedy`: the reference procedure. Prefill all prompt tokens but the last, then decode
  greedily from the last one, one token per forward; the pattern hooks see one query row per
  layer and keep only its argmax. Decoding stops after a stop token (end of turn or a newline,
  which is scored like the reference does) or `max_new_tokens`.
- `score_teacher_forced`: one forward over [last prompt token] + target[:-1] after the same
  prefill (in `query_chunk` rows at a time), argmax per answer row, reduced per layer inside
  the hook. It equals `score_greedy` whenever greedy decoding reproduces `target` (tested).

    result = retrieval_scores(model, trials)             # greedy, as the reference
    result.retrieval_heads()                             # [(16, 3), ...] with score > 0.1
    result.to_frame()                                    # layer, head, score
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
import torch

from interp.core.errors import InterpError
from interp.core.model import HookedModel
from interp.core.sites import Site
from interp.data.needles import NeedleTrial, rouge1_recall

__all__ = [
    "RETRIEVAL_THRESHOLD",
    "RetrievalResult",
    "TrialRetrieval",
    "decode_greedy",
    "retrieval_scores",
    "score_greedy",
    "score_teacher_forced",
    "stop_token_ids",
]

RETRIEVAL_THRESHOLD = 0.1
KEEP_RECALL = 0.5  # the reference keeps trials whose ROUGE-1 recall is > 0.5


@dataclass(frozen=True)
class TrialRetrieval:
    """One trial: per-head copy score (layer, head), the produced tokens, and correctness."""

    scores: torch.Tensor  # (layer, head)
    output_ids: tuple[int, ...]
    response: str
    recall: float
    keys: torch.Tensor | None = None  # (layer, head, step): each head's argmax key position

    @property
    def correct(self) -> bool:
        return self.recall > KEEP_RECALL


def stop_token_ids(model: HookedModel) -> set[int]:
    """End-of-turn / end-of-text ids, and every token whose text contains a newline (the
    reference stops at a newline)."""
    return set(_stops(model.tokenizer))


@lru_cache(maxsize=8)
def _stops(tok) -> frozenset[int]:
    vocab = tok.get_vocab()
    stops = {vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab}
    if tok.eos_token_id is not None:
        stops.add(tok.eos_token_id)
    for piece, i in vocab.items():
        if "\n" in tok.convert_tokens_to_string([piece]):
            stops.add(i)
    return frozenset(stops)


class _ArgmaxKeys:
    """Pattern hooks that keep, per layer, only the argmax key of each (head, query row)."""

    def __init__(self, model: HookedModel) -> None:
        self.n_layers = model.spec.n_layers
        self.keys: list[torch.Tensor | None] = [None] * self.n_layers

    def hooks(self):
        def make(layer: int):
            def fn(pattern: torch.Tensor, _site: Site) -> None:
                self.keys[layer] = pattern[0].argmax(-1)  # (head, query)

            return fn

        return [(Site("pattern", layer=layer), make(layer)) for layer in range(self.n_layers)]

    def stacked(self) -> torch.Tensor:
        missing = [i for i, k in enumerate(self.keys) if k is None]
        if missing:
            raise RuntimeError(f"no attention pattern was seen in layers {missing}")
        return torch.stack(self.keys)  # type: ignore[arg-type]  # (layer, head, query)


def _copy_hits(keys: torch.Tensor, produced: torch.Tensor, prompt: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """(layer, head) count of query rows whose argmax key is in the span and holds the token
    produced at that row. keys: (layer, head, rows); produced: (rows,); prompt: (n_prompt,)."""
    start, end = span
    in_span = (keys >= start) & (keys < end)
    key_tok = prompt[keys.clamp(max=prompt.numel() - 1)]
    return (in_span & (key_tok == produced.view(1, 1, -1))).sum(-1).float()


def _check(model: HookedModel, trial: NeedleTrial) -> torch.Tensor:
    if trial.n_tokens < 2:
        raise InterpError("a needle trial needs a prompt of at least 2 tokens")
    start, end = trial.span
    if not 0 <= start < end <= trial.n_tokens:
        raise InterpError(f"needle span {trial.span} is outside the prompt (0..{trial.n_tokens})")
    return torch.tensor(trial.prompt_ids, dtype=torch.long, device=model.device)


@torch.no_grad()
def _prefill(model: HookedModel, ids: torch.Tensor, chunk_size: int):
    """Key/value cache of `ids` (1-D), forwarded `chunk_size` tokens at a time."""
    if chunk_size < 1:
        raise InterpError(f"chunk_size must be >= 1, got {chunk_size}")
    cache = None
    for start in range(0, ids.numel(), chunk_size):
        _, cache = model.forward_incremental(ids[start : start + chunk_size].view(1, -1), cache, last_logits=1)
    return cache


@torch.no_grad()
def decode_greedy(
    model: HookedModel, trial: NeedleTrial, *, max_new_tokens: int = 32, chunk_size: int = 512,
    stops: set[int] | None = None, on_step: Callable[[torch.Tensor], None] | None = None,
    step_hooks: Sequence = (),
) -> tuple[int, ...]:
    """Greedy answer to a trial: prefill the prompt but its last token, then decode from it.
    `step_hooks` are active during the decoding steps only; `on_step(token)` runs after each."""
    prompt = _check(model, trial)
    stops = stop_token_ids(model) if stops is None else stops
    cache = _prefill(model, prompt[:-1], chunk_size)
    inp, out = prompt[-1:], []
    with model.hooks(list(step_hooks)):  # installed once, after the prefill
        for _ in range(max_new_tokens):
            logits, cache = model.forward_incremental(inp.view(1, 1), cache, last_logits=1)
            token = logits[0, -1].argmax()
            out.append(int(token))
            if on_step is not None:
                on_step(token)
            if int(token) in stops:
                break
            inp = token.view(1)
    return tuple(out)


def _response(model: HookedModel, ids: Sequence[int]) -> str:
    return model.tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def score_greedy(model: HookedModel, trial: NeedleTrial, *, max_new_tokens: int = 32, chunk_size: int = 512,
                 stops: set[int] | None = None) -> TrialRetrieval:
    """The reference scorer: copy hits of each head while the model decodes greedily."""
    prompt = _check(model, trial)
    rec = _ArgmaxKeys(model)
    total = torch.zeros(model.spec.n_layers, model.spec.n_heads)
    steps: list[torch.Tensor] = []

    def on_step(token: torch.Tensor) -> None:
        keys = rec.stacked()  # (layer, head, 1)
        steps.append(keys.cpu())
        total.add_(_copy_hits(keys, token.view(1), prompt, trial.span).cpu())

    out = decode_greedy(model, trial, max_new_tokens=max_new_tokens, chunk_size=chunk_size, stops=stops,
                        on_step=on_step, step_hooks=rec.hooks())
    span_len = trial.span[1] - trial.span[0]
    response = _response(model, out)
    return TrialRetrieval(total / span_len, out, response, rouge1_recall(trial.needle.answer, response),
                          keys=torch.cat(steps, -1))


@torch.no_grad()
def score_teacher_forced(model: HookedModel, trial: NeedleTrial, target: Sequence[int], *, chunk_size: int = 512,
                         query_chunk: int = 64) -> tuple[TrialRetrieval, tuple[int, ...]]:
    """Copy hits with `target` forced as the answer: one pass over its rows after the prefill.
    Returns the trial's scores (response = the decoded target) and the model's top-1 token at
    each answer row (equal to `target` exactly when greedy decoding would reproduce it)."""
    prompt = _check(model, trial)
    target_t = torch.tensor(list(target), dtype=torch.long, device=model.device)
    if target_t.numel() == 0:
        raise InterpError("the teacher-forced target is empty")
    if query_chunk < 1:
        raise InterpError(f"query_chunk must be >= 1, got {query_chunk}")
    cache = _prefill(model, prompt[:-1], chunk_size)
    rows = torch.cat([prompt[-1:], target_t[:-1]])
    rec = _ArgmaxKeys(model)
    total = torch.zeros(model.spec.n_layers, model.spec.n_heads)
    predicted: list[int] = []
    steps: list[torch.Tensor] = []
    for start in range(0, rows.numel(), query_chunk):
        part = rows[start : start + query_chunk]
        with model.hooks(rec.hooks()):
            logits, cache = model.forward_incremental(part.view(1, -1), cache, last_logits=part.numel())
        predicted.extend(logits[0].argmax(-1).tolist())
        produced = target_t[start : start + part.numel()]
        keys = rec.stacked()  # (layer, head, rows)
        steps.append(keys.cpu())
        total += _copy_hits(keys, produced, prompt, trial.span).cpu()
    span_len = trial.span[1] - trial.span[0]
    response = _response(model, target)
    scored = TrialRetrieval(total / span_len, tuple(int(t) for t in target), response,
                            rouge1_recall(trial.needle.answer, response), keys=torch.cat(steps, -1))
    return scored, tuple(predicted)


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval scores over a set of needle trials.

    `per_trial` (trial, layer, head) holds each trial's copy score; `scores` (layer, head) is the
    mean over kept trials (all zeros when none was kept); `trials` has one row per trial."""

    scorer: str
    per_trial: torch.Tensor
    trials: pd.DataFrame  # trial, context_length, depth, needle_index, n_tokens, response, recall, kept

    @property
    def kept(self) -> torch.Tensor:
        return torch.tensor(self.trials["kept"].to_numpy(dtype=bool))

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def scores(self) -> torch.Tensor:
        if self.n_kept == 0:
            return torch.zeros(self.per_trial.shape[1:])
        return self.per_trial[self.kept].mean(0)

    def retrieval_heads(self, threshold: float = RETRIEVAL_THRESHOLD) -> list[tuple[int, int]]:
        """Heads with score > threshold, best first."""
        return [h for h in self.ranked() if float(self.scores[h]) > threshold]

    def ranked(self) -> list[tuple[int, int]]:
        s = self.scores
        order = torch.argsort(s.flatten(), descending=True, stable=True)
        return [(int(i) // s.shape[1], int(i) % s.shape[1]) for i in order]

    def to_frame(self) -> pd.DataFrame:
        s = self.scores
        return pd.DataFrame(
            [{"layer": layer, "head": head, "score": float(s[layer, head])}
             for layer in range(s.shape[0]) for head in range(s.shape[1])]
        )


def _trial_row(i: int, trial: NeedleTrial, scored: TrialRetrieval) -> dict:
    return {
        "trial": i, "context_length": trial.context_length, "depth": trial.depth,
        "needle_index": trial.needle_index, "n_tokens": trial.n_tokens, "response": scored.response,
        "recall": scored.recall, "kept": scored.correct,
    }


def retrieval_scores(
    model: HookedModel,
    trials: Sequence[NeedleTrial],
    *,
    scorer: str = "greedy",
    targets: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int = 32,
    chunk_size: int = 512,
    query_chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalResult:
    """Score every trial. ``scorer="teacher_forced"`` needs `targets` (token ids per trial, e.g.
    each needle sentence); a forced trial is kept when the model's top-1 tokens under teacher
    forcing have ROUGE-1 recall > 0.5 against the answer (what greedy decoding would produce
    where it follows the target)."""
    if scorer not in ("greedy", "teacher_forced"):
        raise InterpError(f"unknown scorer {scorer!r}; allowed: greedy, teacher_forced")
    if not trials:
        raise InterpError("no needle trials to score")
    if scorer == "teacher_forced" and (targets is None or len(targets) != len(trials)):
        raise InterpError("scorer 'teacher_forced' needs one target (token ids) per trial")
    stops = stop_token_ids(model)
    per_trial, rows = [], []
    for i, trial in enumerate(trials):
        if scorer == "greedy":
            scored = score_greedy(model, trial, max_new_tokens=max_new_tokens, chunk_size=chunk_size, stops=stops)
        else:
            scored, predicted = score_teacher_forced(model, trial, targets[i], chunk_size=chunk_size,  # type: ignore[index]
                                                     query_chunk=query_chunk)
            recall = rouge1_recall(trial.needle.answer, _response(model, predicted))
            scored = TrialRetrieval(scored.scores, scored.output_ids, scored.response, recall, scored.keys)
        per_trial.append(scored.scores)
        rows.append(_trial_row(i, trial, scored))
        if progress is not None:
            progress(i + 1, len(trials))
    return RetrievalResult(scorer, torch.stack(per_trial), pd.DataFrame(rows))
