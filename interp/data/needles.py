"""Needle-in-a-haystack prompts for retrieval-head scoring (Wu et al. 2024, arXiv 2404.15574).

A *needle* sentence ("The password for the old library computer is purple elephant seven.") is
inserted at a relative *depth* into filler prose cut to a *context length* (in tokens), then a
question is asked whose answer is a span of the needle. The haystack is the shipped prose in
``data/haystack/*.txt`` (written for this project), concatenated in file-name order and cycled
when a longer context is asked for, so any length works (long contexts are for a GPU).

As in the reference code (`retrieval_head_detection.py`), the *needle span* whose tokens a
retrieval head must copy is where the answer (their `real_needle`) sits in the prompt; here it is
found exactly from the tokenizer's character offsets rather than by token-set overlap.
The needle goes in at the first sentence end at or after the depth, so it never splits a
sentence. With ``chat=True`` (needed by instruct models such as SmolLM2) the document and the
question form one user turn of the model's chat template, and the assistant turn is opened.

    needles = load_needles()
    trials = build_trials(tokenizer, needles, lengths=[500, 1000], depths=[0.1, 0.5, 0.9])
    trials[0].prompt_ids, trials[0].span     # token ids, (start, end) of the answer in the prompt
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.core.errors import DatasetError
from interp.data.pairs import bos_text, check_keys
from interp.data.progress import Progress, ticker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

HAYSTACK_DIR = Path(__file__).resolve().parents[2] / "data" / "haystack"
DEFAULT_NEEDLES = HAYSTACK_DIR / "needles.jsonl"
INSTRUCTION = "Based on the document, answer the question."
NEEDLE_KEYS = ("needle", "question", "answer")


@dataclass(frozen=True)
class Needle:
    needle: str
    question: str
    answer: str


@dataclass(frozen=True)
class NeedleTrial:
    """One prompt: `prompt_ids` (the full prompt, chat turn opened), `span` = [start, end) of the
    answer's tokens inside it, the needle's index, the haystack length asked for and the depth."""

    prompt_ids: tuple[int, ...]
    span: tuple[int, int]
    needle_index: int
    needle: Needle
    context_length: int
    depth: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids)


def load_needles(path: str | Path | None = None) -> list[Needle]:
    """Needles from a JSONL file (fields needle, question, answer; the answer must occur
    verbatim in the needle). Errors name file:line."""
    path = Path(path) if path is not None else DEFAULT_NEEDLES
    if not path.is_file():
        raise DatasetError(f"needles file {path} does not exist")
    needles: list[Needle] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"not valid JSON ({e.msg})", line=i, file=str(path)) from None
        if not isinstance(row, dict):
            raise DatasetError("each line must be a JSON object with needle, question, answer",
                               line=i, file=str(path))
        check_keys(row, NEEDLE_KEYS, NEEDLE_KEYS, line=i, file=str(path),
                   needs=f"a needle needs {', '.join(NEEDLE_KEYS)}")
        for key in NEEDLE_KEYS:
            if not isinstance(row[key], str) or not row[key].strip():
                raise DatasetError(f"field {key!r} must be a non-empty string", line=i, file=str(path))
        if row["answer"] not in row["needle"]:
            raise DatasetError(f"answer {row['answer']!r} does not occur verbatim in the needle",
                               line=i, file=str(path))
        needles.append(Needle(row["needle"].strip(), row["question"].strip(), row["answer"].strip()))
    if not needles:
        raise DatasetError("no needles in the file", file=str(path))
    return needles


def load_haystack(directory: str | Path | None = None) -> str:
    """The filler prose: every ``*.txt`` in `directory`, in name order, joined by blank lines."""
    directory = Path(directory) if directory is not None else HAYSTACK_DIR
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise DatasetError(f"no haystack *.txt files in {directory}")
    return "\n\n".join(f.read_text(encoding="utf-8").strip() for f in files)


def _haystack_ids(tokenizer: PreTrainedTokenizerBase, text: str, length: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    out: list[int] = []
    while len(out) < length:  # cycle through the prose for contexts longer than all of it
        out.extend(ids if not out else sep + ids)
    return out[:length]


def _insert(tokenizer: PreTrainedTokenizerBase, ids: list[int], depth: float, needle: str) -> str:
    """The haystack text with the needle after the first sentence end at or after `depth`."""
    cut = int(len(ids) * depth)
    while 0 < cut < len(ids) and not tokenizer.decode(ids[cut - 1 : cut]).rstrip().endswith((".", "!", "?")):
        cut += 1
    before, after = tokenizer.decode(ids[:cut]), tokenizer.decode(ids[cut:])
    if not before:
        return f"{needle} {after.lstrip()}"
    return f"{before.rstrip()} {needle} {after.lstrip()}".rstrip()


def render_prompt(tokenizer: PreTrainedTokenizerBase, context: str, question: str, *, chat: bool) -> str:
    user = f"<document>\n{context}\n</document>\n{INSTRUCTION} Question: {question}"
    if not chat:
        return f"{bos_text(tokenizer)}{user}\nAnswer:"
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                         tokenize=False)


def _token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    covering = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not covering:
        raise DatasetError("the answer's characters map to no prompt token")
    return covering[0], covering[-1] + 1


def build_trials(
    tokenizer: PreTrainedTokenizerBase,
    needles: list[Needle],
    lengths: list[int],
    depths: list[float],
    *,
    chat: bool = True,
    haystack: str | None = None,
    progress: Progress | None = None,
) -> list[NeedleTrial]:
    """One trial per (context length, depth, needle), in that nesting order."""
    if not needles:
        raise DatasetError("no needles given")
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise DatasetError(f"depth {d} is outside [0, 1] (a fraction of the context)")
    for n in lengths:
        if n < 1:
            raise DatasetError(f"context length {n} must be >= 1 token")
    text = haystack if haystack is not None else load_haystack()
    trials: list[NeedleTrial] = []
    tick = ticker(progress, len(lengths) * len(depths) * len(needles))
    for length in lengths:
        ids = _haystack_ids(tokenizer, text, length)
        for depth in depths:
            for k, nd in enumerate(needles):
                context = _insert(tokenizer, ids, depth, nd.needle)
                prompt = render_prompt(tokenizer, context, nd.question, chat=chat)
                enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
                at = prompt.find(nd.needle)
                if at < 0:
                    raise DatasetError(f"needle {k} was not found in its rendered prompt")
                a = at + nd.needle.index(nd.answer)
                span = _token_span(enc["offset_mapping"], a, a + len(nd.answer))
                trials.append(NeedleTrial(
                    prompt_ids=tuple(enc["input_ids"]), span=span, needle_index=k, needle=nd,
                    context_length=length, depth=float(depth),
                    meta={"needle_char": at, "prompt_chars": len(prompt)},
                ))
                tick(len(trials))
    return trials


def needle_target(tokenizer: PreTrainedTokenizerBase, trial: NeedleTrial) -> list[int]:
    """A teacher-forced answer for `trial`: its needle sentence, then end of turn (an instruct
    model such as SmolLM2 answers by restating the needle)."""
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return tokenizer(trial.needle.needle, add_special_tokens=False)["input_ids"] + end


_WORD = re.compile(r"\w+")


def rouge1_recall(reference: str, response: str) -> float:
    """ROUGE-1 recall: the share of the reference's words (lower-cased, with multiplicity) that
    the response contains, the reference's correctness test (it keeps trials with recall > 0.5)."""
    ref = Counter(_WORD.findall(reference.lower()))
    got = Counter(_WORD.findall(response.lower()))
    total = sum(ref.values())
    return 0.0 if total == 0 else sum((ref & got).values()) / total
