"""Indirect Object Identification (IOI) prompt pairs, after Wang et al. 2022.

An IOI prompt names two people, repeats one of them (the subject S), and ends where the other one
(the indirect object IO) is the natural next word:

    "When Mary and John went to the store, John gave a drink to"   -> " Mary" (IO), not " John" (S)

`IOI_TEMPLATES` holds the paper's 15 templates in both name orders (ABBA: IO first; BABA: S
first), with slots ``[IO]``, ``[S]``, ``[PLACE]`` and ``[OBJECT]``. `generate_ioi` fills them
from single-token names and builds the corrupt prompt by changing names only, so clean and
corrupt always have the same token length:

- ``"abc"``: IO, S1 and S2 each become a distinct fresh name (the paper's p_ABC);
- ``"flip"``: IO and S are swapped everywhere, so the corrupt answer is the clean distractor.

    >>> ds = generate_ioi(100, tokenizer, seed=0, corruption="abc")
    >>> ds[0].answer, ds[0].distractor      # e.g. (' Mary', ' John')
    >>> ds[0].meta["positions"]              # e.g. {'IO': 1, 'S1': 3, 'S2': 9, 'END': 13}
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from interp.core.errors import DatasetError
from interp.data.pairs import PairDataset, PromptPair
from interp.data.progress import Progress, ticker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The paper's BABA templates (S named first), each ending right before the IO.
_BABA = (
    "Then, [S] and [IO] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [S] and [IO] had a lot of fun at the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [S] and [IO] were working at the [PLACE]. [S] decided to give a [OBJECT] to",
    "Then, [S] and [IO] were thinking about going to the [PLACE]. [S] wanted to give a [OBJECT] to",
    "Then, [S] and [IO] had a long argument, and afterwards [S] said to",
    "After [S] and [IO] went to the [PLACE], [S] gave a [OBJECT] to",
    "When [S] and [IO] got a [OBJECT] at the [PLACE], [S] decided to give it to",
    "When [S] and [IO] got a [OBJECT] at the [PLACE], [S] decided to give the [OBJECT] to",
    "While [S] and [IO] were working at the [PLACE], [S] gave a [OBJECT] to",
    "While [S] and [IO] were commuting to the [PLACE], [S] gave a [OBJECT] to",
    "After the lunch, [S] and [IO] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Afterwards, [S] and [IO] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [S] and [IO] had a long argument. Afterwards [S] said to",
    "The [PLACE] [S] and [IO] went to had a [OBJECT]. [S] gave it to",
    "Friends [S] and [IO] found a [OBJECT] at the [PLACE]. [S] gave it to",
)


def _to_abba(template: str) -> str:
    # Swap the first mentions only: "[S] and [IO]" -> "[IO] and [S]".
    return template.replace("[S] and [IO]", "[IO] and [S]", 1)


# Indices 0-14 are ABBA (IO first), 15-29 the same sentences in BABA order.
IOI_TEMPLATES: tuple[str, ...] = tuple(_to_abba(t) for t in _BABA) + _BABA

PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park")
OBJECTS = ("drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack")

DEFAULT_NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Carol", "David", "Emma", "James", "Sarah", "Michael",
    "Laura", "Daniel", "Anna", "Thomas", "Emily", "Robert", "Jessica", "William", "Rachel",
    "Richard", "Kate", "Joseph", "Linda", "Charles", "Susan", "Christopher", "Karen", "Matthew",
    "Lisa", "Anthony", "Nancy", "Mark", "Betty", "Paul", "Sandra", "Steven", "Helen", "Andrew",
    "Kevin", "Ruth", "Brian", "Sharon", "George", "Michelle", "Edward", "Amy", "Ronald",
    "Angela", "Timothy", "Jason", "Jeffrey", "Ryan", "Jacob", "Nicole", "Gary", "Samantha",
    "Nicholas", "Katherine", "Eric", "Christine", "Jonathan", "Stephen", "Larry", "Justin",
    "Janet", "Scott", "Maria", "Frank", "Heather", "Benjamin", "Diane", "Gregory", "Julie",
    "Samuel", "Joyce", "Raymond", "Victoria", "Patrick", "Kelly", "Alexander", "Christina",
    "Jack", "Lauren", "Dennis", "Joan", "Jerry", "Tyler", "Olivia", "Aaron", "Judith", "Henry",
    "Adam", "Peter", "Martha", "Nathan", "Andrea", "Frances", "Douglas", "Hannah", "Walter",
    "Ann", "Ethan", "Jean", "Harold", "Keith", "Christian", "Teresa", "Roger", "Sara", "Noah",
    "Gerald", "Carl", "Julia", "Terry", "Grace", "Sean", "Judy", "Austin", "Arthur", "Madison",
    "Lawrence", "Jesse", "Bryan", "Joe", "Jordan", "Rose", "Billy", "Bruce", "Diana", "Albert",
    "Abigail", "Gabriel", "Jane", "Logan", "Alan", "Juan", "Wayne", "Roy", "Lucy", "Ralph",
)  # fmt: skip

CORRUPTIONS = ("abc", "flip")

_SLOT = re.compile(r"\[(IO|S|PLACE|OBJECT)\]")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token_names(
    tokenizer: PreTrainedTokenizerBase, candidates: Sequence[str] = DEFAULT_NAMES
) -> list[str]:
    """The candidates whose " Name" (with the leading space) is exactly one token, in order."""
    seen: set[str] = set()
    out = []
    for name in candidates:
        if name not in seen and len(_encode(tokenizer, " " + name)) == 1:
            out.append(name)
        seen.add(name)
    return out


def _fill(template: str, io: str, s1: str, s2: str, place: str, obj: str) -> tuple[str, dict]:
    """Fill the slots; return the text and the character offset of each name (after its space)."""
    parts: list[str] = []
    starts: dict[str, int] = {}
    pos = 0
    s_seen = 0
    for m in _SLOT.finditer(template):
        parts.append(template[pos : m.start()])
        slot = m.group(1)
        if slot == "IO":
            label, value = "IO", io
        elif slot == "S":
            s_seen += 1
            label, value = f"S{s_seen}", (s1 if s_seen == 1 else s2)
        else:
            label, value = slot, (place if slot == "PLACE" else obj)
        if label not in ("PLACE", "OBJECT"):
            starts[label] = sum(map(len, parts))
        parts.append(value)
        pos = m.end()
    parts.append(template[pos:])
    return "".join(parts), starts


def _positions(
    tokenizer: PreTrainedTokenizerBase, text: str, starts: dict[str, int], names: dict[str, str]
) -> dict[str, int]:
    """Token index of each name, found by encoding the text before it, then checked."""
    ids = _encode(tokenizer, text)
    positions = {}
    for label in ("IO", "S1", "S2"):
        start = starts[label]
        # The name's token carries the leading space, so count the tokens before that space.
        pos = len(_encode(tokenizer, text[: start - 1]))
        expected = _encode(tokenizer, " " + names[label])
        if ids[pos : pos + 1] != expected:
            raise DatasetError(
                f"could not locate {label}={names[label]!r} as one token in {text!r}; this "
                "tokenizer splits the prompt differently around the name"
            )
        positions[label] = pos
    positions["END"] = len(ids) - 1
    return positions


def _check_templates(templates: Sequence[int] | None) -> list[int]:
    if templates is None:
        return list(range(len(IOI_TEMPLATES)))
    chosen = list(templates)
    if not chosen:
        raise ValueError(
            f"templates is empty; pass None for all or indices in 0..{len(IOI_TEMPLATES) - 1}"
        )
    for t in chosen:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(IOI_TEMPLATES):
            raise ValueError(
                f"template index {t!r} is out of range; allowed: integers 0..{len(IOI_TEMPLATES) - 1} "
                "(0-14 ABBA, 15-29 BABA)"
            )
    return chosen


def generate_ioi(
    n: int,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    corruption: str = "abc",
    templates: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> PairDataset:
    """`n` seeded IOI pairs; answer is " IO" and distractor " S" (both for the clean prompt).

    meta per pair: ``template`` and ``group`` (the template index), ``order`` ("ABBA"/"BABA"),
    ``io``, ``s``, ``place``, ``object``, ``corrupt_names`` ({"IO", "S1", "S2"} in the corrupt
    prompt) and ``positions`` ({"IO", "S1", "S2", "END"}: token indices in the clean prompt,
    no BOS). `progress(done, total)` is told as the pairs are made.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; allowed: {', '.join(CORRUPTIONS)}")
    chosen = _check_templates(templates)
    if names is None:
        pool = single_token_names(tokenizer)
    else:
        pool = list(dict.fromkeys(names))
        multi = [x for x in pool if len(_encode(tokenizer, " " + x)) != 1]
        if multi:
            raise DatasetError(
                f"names must be one token with a leading space; not one token: {multi[:10]!r} "
                "(use single_token_names(tokenizer, candidates) to filter them)"
            )
    need = 5 if corruption == "abc" else 2
    if len(pool) < need:
        raise DatasetError(
            f"corruption={corruption!r} needs at least {need} distinct single-token names, "
            f"got {len(pool)}"
        )

    rng = random.Random(seed)
    pairs = []
    tick = ticker(progress, n)
    for i in range(n):
        t = rng.choice(chosen)
        template = IOI_TEMPLATES[t]
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        if corruption == "abc":
            io, s, a, b, c = rng.sample(pool, 5)
            corrupt_names = {"IO": a, "S1": b, "S2": c}
        else:
            io, s = rng.sample(pool, 2)
            corrupt_names = {"IO": s, "S1": io, "S2": io}
        clean, starts = _fill(template, io, s, s, place, obj)
        corrupt, _ = _fill(template, *corrupt_names.values(), place, obj)
        n_clean, n_corrupt = len(_encode(tokenizer, clean)), len(_encode(tokenizer, corrupt))
        if n_clean != n_corrupt:
            raise DatasetError(
                f"clean prompt has {n_clean} tokens but corrupt has {n_corrupt} "
                f"({clean!r} vs {corrupt!r}); the names must tokenize alike",
                line=i + 1,
            )
        meta: dict[str, Any] = {
            "template": t,
            "group": t,
            "order": "ABBA" if template.index("[IO]") < template.index("[S]") else "BABA",
            "io": io,
            "s": s,
            "place": place if "[PLACE]" in template else None,
            "object": obj if "[OBJECT]" in template else None,
            "corrupt_names": corrupt_names,
            "positions": _positions(tokenizer, clean, starts, {"IO": io, "S1": s, "S2": s}),
        }
        pairs.append(PromptPair(clean, corrupt, " " + io, " " + s, meta))
        tick(i + 1)

    source = {
        "generator": "interp.data.ioi.generate_ioi",
        "n": n,
        "seed": seed,
        "corruption": corruption,
        "templates": chosen if templates is not None else None,
        "names": list(names) if names is not None else None,
        "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
    }
    return PairDataset(tuple(pairs), name=f"ioi-{corruption}-n{n}-seed{seed}", source=source)
