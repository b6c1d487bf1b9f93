"""The fact table (`interp.data.knowledge`): validation errors name file:line, prompts,
counterfactuals and the clean/corrupt pairing used to find memory and context heads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from interp.core.errors import DatasetError
from interp.data.knowledge import (
    DEFAULT_FACTS,
    answer_token,
    closed_book_prompt,
    conflict_pairs,
    conflict_prompt,
    load_facts,
    make_conflicts,
    split_by_relation,
)

REL = {
    "relation": "capital_of",
    "question": "What is the capital of {subject}?",
    "cloze": "The capital of {subject} is",
}


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _fact(s: str, o: str, rel: str = "capital_of") -> dict:
    return {"subject": s, "relation": rel, "object": o}


def test_bundled_table():
    table = load_facts()
    counts = Counter(f.relation for f in table.facts)
    assert len(table.relations) >= 6 and set(counts) == set(table.relations)
    assert all(n >= 20 for n in counts.values()), counts
    assert table.source["file"] == str(DEFAULT_FACTS) and len(table.source["sha256"]) == 64
    assert table.to_frame().shape == (len(table), 3)


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ([REL, "{oops"], 2, "invalid JSON"),
        ([REL, "[1, 2]"], 2, "expected a JSON object"),
        ([REL, {**_fact("France", "Paris"), "note": 1}], 2, "unknown key(s) 'note' in a fact line"),
        ([{**REL, "extra": 1}], 1, "unknown key(s) 'extra' in a relation line"),
        ([REL, {"subject": "France", "object": "Paris"}], 2, "missing key(s) 'relation'"),
        ([{"relation": "r", "cloze": "{subject} is"}], 1, "missing key(s) 'question'"),
        ([{**REL, "cloze": "The capital is"}], 1, "must contain '{subject}' exactly once"),
        (
            [{**REL, "question": "{subject} or {subject}?"}],
            1,
            "must contain '{subject}' exactly once",
        ),
        ([{**REL, "question": "{object} of {subject}?"}], 1, "no other braces"),
        ([{**REL, "cloze": "The capital of {subject} is "}], 1, "must not end with a space"),
        ([{**REL, "relation": "capital of"}], 1, "letters, digits and '_'"),
        ([REL, _fact("France", "")], 2, "'object' must be a non-empty string"),
        ([REL, _fact(" France", "Paris")], 2, "without surrounding spaces"),
        ([REL, _fact("France", "Paris"), REL], 3, "defined twice (first on line 1)"),
        (
            [REL, _fact("France", "Paris"), _fact("Spain", "Madrid"), _fact("France", "Lyon")],
            4,
            "repeats line 2",
        ),
        (
            [REL, _fact("France", "Paris"), _fact("Peru", "Lima", "capitol")],
            3,
            "unknown relation 'capitol'",
        ),
        (
            [REL, _fact("France", "Paris"), _fact("Spain", "Paris")],
            1,
            "fewer than 2 distinct objects",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, lines, line, message):
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as e:
        load_facts(path)
    assert e.value.line == line and e.value.file == str(path)
    assert f"{path}:{line}: " in str(e.value)
    assert message in str(e.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        load_facts(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="no facts"):
        load_facts(_write(tmp_path, [REL, ""]))


def test_prompts(tokenizer):
    table = load_facts()
    rel = table.relations["capital_of"]
    chat = closed_book_prompt(tokenizer, rel, "France")
    assert "What is the capital of France?" in chat and chat.endswith(
        "<|im_start|>assistant\nThe capital of France is"
    )
    assert closed_book_prompt(tokenizer, rel, "France", chat=False) == "The capital of France is"
    conflict = conflict_prompt(tokenizer, rel, "France", "Rome")
    assert "The capital of France is Rome. What is the capital of France?" in conflict
    assert conflict.endswith("The capital of France is")
    plain = conflict_prompt(tokenizer, rel, "France", "Rome", chat=False)
    assert plain == "The capital of France is Rome. The capital of France is"
    cont = table.relations["continent"]  # templates starting with the subject are capitalised
    assert closed_book_prompt(tokenizer, cont, "the Netherlands", chat=False).startswith(
        "The Netherlands is"
    )
    # the answer token is the first token of " " + object, i.e. what follows the cloze
    ids = tokenizer(plain + " Paris", add_special_tokens=False)["input_ids"]
    assert ids[-1] == answer_token(tokenizer, "Paris")
    assert (
        answer_token(tokenizer, "New Delhi")
        == tokenizer(" New", add_special_tokens=False)["input_ids"][0]
    )


def test_counterfactuals_are_seeded_and_distinct(tokenizer):
    table = load_facts()
    items = make_conflicts(table.facts, table, tokenizer, seed=0)
    assert len(items) == len(table)
    for it in items:
        assert it.context_object in table.objects(it.fact.relation)
        assert it.memory_token == answer_token(tokenizer, it.fact.object)
        assert it.context_token == answer_token(tokenizer, it.context_object) != it.memory_token
        assert f" {it.context_object}." in it.prompt
    again = make_conflicts(table.facts, table, tokenizer, seed=0)
    other = make_conflicts(table.facts, table, tokenizer, seed=1)
    assert [i.context_object for i in again] == [i.context_object for i in items]
    assert [i.context_object for i in other] != [i.context_object for i in items]


def test_pairs_and_split(tokenizer):
    table = load_facts()
    facts = [f for f in table.facts if f.relation in ("capital_of", "antonym")]
    items = make_conflicts(facts, table, tokenizer, seed=0)
    ds = conflict_pairs(items, tokenizer, seed=0)
    assert len(ds) + ds.source["n_unpaired"] == len(items) and len(ds) > len(items) // 2
    by_prompt = {it.prompt: it for it in items}
    for p in ds:
        clean, corrupt = by_prompt[p.clean], by_prompt[p.corrupt]
        assert (
            clean.fact.relation == corrupt.fact.relation
            and clean.fact.subject != corrupt.fact.subject
        )
        assert len(tokenizer(p.clean)["input_ids"]) == len(tokenizer(p.corrupt)["input_ids"])
        assert not {clean.memory_token, clean.context_token} & {
            corrupt.memory_token,
            corrupt.context_token,
        }
        assert tokenizer(p.answer, add_special_tokens=False)["input_ids"] == [clean.memory_token]
        assert tokenizer(p.distractor, add_special_tokens=False)["input_ids"] == [
            clean.context_token
        ]
    train, held = split_by_relation(items, ["antonym"])
    assert {i.fact.relation for i in held} == {"antonym"} and {i.fact.relation for i in train} == {
        "capital_of"
    }
    assert len(train) + len(held) == len(items)
    with pytest.raises(DatasetError, match="no conflict prompt has a same-relation"):
        conflict_pairs(items[:1], tokenizer)
