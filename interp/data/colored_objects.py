"""Colored Objects prompts (Merullo et al. 2023, after BIG-bench's reasoning_about_colored_objects).

    "On the desk, there is a red book, a blue pen and a green cup. Question: what colour is the
     pen? Answer: the pen is"  ->  " blue"

The minimal-difference corruption asks about another object on the same desk, so the answer
becomes that object's colour (the clean answer's distractor); nothing else changes and the
token length stays the same (objects and colours are single tokens). Each pair's meta records
the option colours' token ids and the token positions of every colour and object, which the
option accuracy and the attention intervention use.

    ds = generate_colored_objects(20, tokenizer, seed=0)
"""

from __future__ import annotations

import random
from typing import Any

from interp.core.errors import DatasetError
from interp.data.pairs import PairDataset, PromptPair
from interp.data.progress import Progress, ticker

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey")
OBJECTS = ("book", "pen", "cup", "ball", "key", "hat", "box", "phone", "shoe", "bag", "car", "lamp", "plate",
           "chair", "bottle", "clock", "spoon", "sock", "toy", "coin")
TEMPLATE = ("On the desk, there is a {c0} {o0}, a {c1} {o1} and a {c2} {o2}. "
            "Question: what colour is the {q}? Answer: the {q} is")


def _single(tokenizer, word: str) -> int:
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise DatasetError(f"{word!r} is {len(ids)} tokens for this tokenizer; colours and objects must be one token")
    return ids[0]


def _positions(tokenizer, text: str, words: list[str]) -> dict[str, int]:
    """Token position of the first occurrence of each word (as ' word')."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = {}
    for w in words:
        wid = _single(tokenizer, w)
        if wid in ids:
            out[w] = ids.index(wid)
    return out


def generate_colored_objects(n: int, tokenizer, *, seed: int = 0, n_objects: int = 3,
                             progress: Progress | None = None) -> PairDataset:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n_objects != 3:
        raise ValueError("only 3 objects per desk are supported (the template has three slots)")
    for w in (*COLOURS, *OBJECTS):
        _single(tokenizer, w)
    rng = random.Random(seed)
    pairs = []
    tick = ticker(progress, n)
    for i in range(n):
        colours = rng.sample(COLOURS, 3)
        objects = rng.sample(OBJECTS, 3)
        q, q2 = rng.sample(range(3), 2)
        fill: dict[str, Any] = {f"c{i}": colours[i] for i in range(3)} | {f"o{i}": objects[i] for i in range(3)}
        clean = TEMPLATE.format(q=objects[q], **fill)
        corrupt = TEMPLATE.format(q=objects[q2], **fill)
        pos = _positions(tokenizer, clean, colours)
        meta = {
            "group": 0,
            "colours": colours,
            "objects": objects,
            "query": q,
            "corrupt_query": q2,
            "option_ids": [_single(tokenizer, c) for c in colours],
            "colour_positions": [pos[c] for c in colours],
            # the answer colour's position, under the role name the copy score uses
            "positions": {"IO": pos[colours[q]],
                          "END": len(tokenizer(clean, add_special_tokens=False)["input_ids"]) - 1},
        }
        pairs.append(PromptPair(clean, corrupt, " " + colours[q], " " + colours[q2], meta))
        tick(i + 1)
    return PairDataset(tuple(pairs), f"colored-objects-n{n}-seed{seed}",
                       {"generator": "colored_objects", "n": n, "seed": seed, "template": TEMPLATE})
