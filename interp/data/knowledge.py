"""Knowledge-conflict prompts: a fact table, closed-book questions and counterfactual contexts.

After Jin et al. 2024 ("Cutting Off the Head Ends the Conflict", arXiv 2402.18154). A *fact* is
(subject, relation, object), e.g. (France, capital_of, Paris). The model's *memory answer* o_m is
the object; a *counterfactual context* states the same relation with another object of that
relation, o_c ("The capital of France is Rome."), and then asks the question, so the model must
choose between its parametric memory and the context.

The table (``data/facts.jsonl``) has two kinds of lines:

- a relation: ``{"relation": "capital_of", "question": "What is the capital of {subject}?",
  "cloze": "The capital of {subject} is"}``; both templates hold ``{subject}`` once;
- a fact: ``{"subject": "France", "relation": "capital_of", "object": "Paris"}``.

Prompts (``chat=True``, the default for the instruct model SmolLM2): a user turn with the
question (closed book) or the context statement followed by the question (conflict), rendered
with the tokenizer's chat template, and the assistant turn prefilled with the cloze, so the very
next token is the answer's first token. The statement is the cloze plus the object and a full
stop. With ``chat=False`` the prompt is the plain text "[statement ]cloze". Answers are scored
by their first token (`answer_token`: the token of " " + object), so multi-token objects
("New Delhi") count by " New"; a counterfactual object is only drawn among objects whose first
token differs from o_m's.

    table = load_facts()                                    # data/facts.jsonl
    closed_book_prompt(tok, table.relations["capital_of"], "France")
    items = make_conflicts(known, tok, seed=0)              # one counterfactual per fact
    pairs = conflict_pairs(items, tok, seed=0)              # clean/corrupt pairs for patching
    train, heldout = split_by_relation(items, ["antonym"])

Errors in the table are `DatasetError`s naming the file and the 1-based line.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from interp.core.errors import DatasetError

# The fact table lives in interp.data.facts; its names stay importable from here.
from interp.data.facts import (  # noqa: F401
    DEFAULT_FACTS,
    FACT_KEYS,
    RELATION_KEYS,
    Fact,
    FactTable,
    Relation,
    load_facts,
)
from interp.data.pairs import PairDataset, PromptPair, bos_text
from interp.data.progress import Progress, ticker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# ---------------------------------------------------------------------------------- prompts


def _render(tokenizer: PreTrainedTokenizerBase, user: str, prefill: str, chat: bool) -> str:
    if not chat:
        return bos_text(tokenizer) + (f"{user} {prefill}" if user else prefill)
    if getattr(tokenizer, "chat_template", None) is None:
        raise DatasetError("chat=True needs a tokenizer with a chat template; pass chat=False")
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )
    return head + prefill


def closed_book_prompt(
    tokenizer: PreTrainedTokenizerBase, relation: Relation, subject: str, *, chat: bool = True
) -> str:
    """The question with no context; the next token should be the object's first token."""
    user = relation.render_question(subject) if chat else ""
    return _render(tokenizer, user, relation.render_cloze(subject), chat)


def conflict_prompt(
    tokenizer: PreTrainedTokenizerBase,
    relation: Relation,
    subject: str,
    context_object: str,
    *,
    chat: bool = True,
) -> str:
    """The context statement with `context_object`, then the question (chat) and the cloze."""
    statement = relation.statement(subject, context_object)
    user = f"{statement} {relation.render_question(subject)}" if chat else statement
    return _render(tokenizer, user, relation.render_cloze(subject), chat)


def answer_token(tokenizer: PreTrainedTokenizerBase, obj: str) -> int:
    """The first token of " " + obj: what follows the cloze when the model answers `obj`."""
    ids = tokenizer(" " + obj, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DatasetError(f"object {obj!r} encodes to no tokens")
    return int(ids[0])


# ---------------------------------------------------------------------------- conflict items


@dataclass(frozen=True)
class ConflictItem:
    """One fact with a counterfactual context: o_m = fact.object, o_c = context_object."""

    fact: Fact
    context_object: str
    prompt: str
    memory_token: int
    context_token: int


def make_conflicts(
    facts: Sequence[Fact],
    table: FactTable,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    chat: bool = True,
    progress: Progress | None = None,
) -> list[ConflictItem]:
    """One counterfactual per fact: o_c drawn (seeded) among the relation's objects in `table`
    whose first token differs from o_m's first token."""
    rng = random.Random(seed)
    first = {}
    out = []
    tick = ticker(progress, len(facts))
    for f in facts:
        rel = table.relations[f.relation]
        pool = table.objects(f.relation)
        for o in pool:
            if o not in first:
                first[o] = answer_token(tokenizer, o)
        m_tok = first.get(f.object) or answer_token(tokenizer, f.object)
        choices = [o for o in pool if first[o] != m_tok]
        if not choices:
            raise DatasetError(
                f"relation {f.relation!r} has no object whose first token differs from "
                f"{f.object!r}'s; add more objects to it",
                line=f.line,
                file=table.source.get("file"),
            )
        oc = rng.choice(choices)
        prompt = conflict_prompt(tokenizer, rel, f.subject, oc, chat=chat)
        out.append(ConflictItem(f, oc, prompt, m_tok, first[oc]))
        tick(len(out))
    return out


def items_frame(items: Sequence[ConflictItem], tokenizer: PreTrainedTokenizerBase) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "subject": it.fact.subject,
                "relation": it.fact.relation,
                "memory_object": it.fact.object,
                "context_object": it.context_object,
                "memory_token": tokenizer.decode([it.memory_token]),
                "context_token": tokenizer.decode([it.context_token]),
                "prompt": it.prompt,
            }
            for it in items
        ]
    )


def split_by_relation(
    items: Sequence[ConflictItem], heldout: Sequence[str]
) -> tuple[list[ConflictItem], list[ConflictItem]]:
    """(train items, held-out items): held-out = the items of the `heldout` relations."""
    held = set(heldout)
    return [i for i in items if i.fact.relation not in held], [
        i for i in items if i.fact.relation in held
    ]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def conflict_pairs(
    items: Sequence[ConflictItem], tokenizer: PreTrainedTokenizerBase, *, seed: int = 0
) -> PairDataset:
    """Clean/corrupt pairs for path patching the memory/context heads.

    clean = an item's conflict prompt; corrupt = the conflict prompt of another fact of the same
    relation with the same token length whose o_m and o_c first tokens share none with the
    clean item's (so in the corrupt run neither the memory nor the context of the clean item is
    present); answer = o_m's first token, distractor = o_c's. Items without such a partner (or
    whose answer tokens do not survive decode/encode) are left out, counted in
    ``source["n_unpaired"]``."""
    rng = random.Random(seed)
    lengths = [len(_ids(tokenizer, it.prompt)) for it in items]
    pairs = []
    unpaired = 0
    for i, it in enumerate(items):
        mine = {it.memory_token, it.context_token}
        partners = [
            j
            for j, other in enumerate(items)
            if j != i
            and other.fact.relation == it.fact.relation
            and lengths[j] == lengths[i]
            and not mine & {other.memory_token, other.context_token}
        ]
        if not partners:
            unpaired += 1
            continue
        answer, distractor = (tokenizer.decode([t]) for t in (it.memory_token, it.context_token))
        if [_ids(tokenizer, answer), _ids(tokenizer, distractor)] != [
            [it.memory_token],
            [it.context_token],
        ]:  # the pair format stores answers as text: they must re-encode to the same token
            unpaired += 1
            continue
        other = items[rng.choice(partners)]
        pairs.append(
            PromptPair(
                it.prompt,
                other.prompt,
                answer,
                distractor,
                {
                    "item": i,
                    "relation": it.fact.relation,
                    "subject": it.fact.subject,
                    "memory_object": it.fact.object,
                    "context_object": it.context_object,
                    "corrupt_subject": other.fact.subject,
                    "corrupt_context_object": other.context_object,
                },
            )
        )
    if not pairs:
        raise DatasetError(
            f"no conflict prompt has a same-relation, same-length partner among {len(items)} "
            "items; use more facts"
        )
    return PairDataset(
        tuple(pairs), name="knowledge_conflicts", source={"seed": seed, "n_unpaired": unpaired}
    )
