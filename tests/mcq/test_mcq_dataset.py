"""The MCQ prompt-pair generator: determinism, equal lengths, the corruption, random labels."""

from __future__ import annotations

import pytest

from interp.core.errors import DatasetError
from interp.data.mcq import (
    LABELS,
    RANDOM_LABEL_POOL,
    MCQItem,
    generate_mcq,
    load_mcq_items,
)
from interp.data.pairs import tokenize_pairs


def test_bundled_items_are_valid_and_plentiful():
    items = load_mcq_items()
    assert len(items) >= 60
    assert len({i.question for i in items}) == len(items)
    assert all(len({i.answer, *i.distractors}) == 4 for i in items)


def test_same_seed_same_dataset_other_seed_differs(tokenizer):
    a = generate_mcq(20, tokenizer, seed=3)
    b = generate_mcq(20, tokenizer, seed=3)
    c = generate_mcq(20, tokenizer, seed=4)
    assert a.pairs == b.pairs
    assert [p.clean for p in a] != [p.clean for p in c]
    assert a.source["seed"] == 3 and a.source["n"] == 20


@pytest.mark.parametrize("fmt", ["content_letter", "letter"])
@pytest.mark.parametrize("random_labels", [False, True])
def test_pairs_have_equal_lengths_and_the_swap_moves_the_answer(tokenizer, fmt, random_labels):
    ds = generate_mcq(40, tokenizer, seed=0, fmt=fmt, random_labels=random_labels)
    assert len(ds) + ds.source["n_dropped_unequal_length"] == 40
    tp = tokenize_pairs(ds, tokenizer)  # raises on unequal lengths or multi-token answers
    assert tp.n == len(ds)
    for p in ds:
        m = p.meta
        labels, contents = m["labels"], m["contents"]
        c, d = m["correct_index"], m["distractor_index"]
        assert c != d and contents[c] == m["correct_content"]
        space = " " if fmt == "letter" else ""
        assert p.answer == space + labels[c] and p.distractor == space + labels[d]
        assert m["letter_tokens"] == [space + lab for lab in labels]
        # The corrupt prompt is the clean one with the two options' contents swapped.
        clean_line = f"{labels[c]}. {contents[c]}" if fmt == "letter" else f"{contents[c]} ({labels[c]})"
        corrupt_line = f"{labels[d]}. {contents[c]}" if fmt == "letter" else f"{contents[c]} ({labels[d]})"
        clean_lines = p.clean.replace("<|im_end|>", "\n").split("\n")
        corrupt_lines = p.corrupt.replace("<|im_end|>", "\n").split("\n")
        assert clean_line in clean_lines and corrupt_line in corrupt_lines
        assert corrupt_line not in clean_lines
        assert p.clean.startswith("<|im_start|>")  # chat template
        assert p.clean.endswith("Answer:" if fmt == "letter" else f"{contents[c]} (")


def test_options_are_shuffled_so_every_slot_is_correct_sometimes(tokenizer):
    ds = generate_mcq(60, tokenizer, seed=0)
    assert {p.meta["correct_index"] for p in ds} == {0, 1, 2, 3}


def test_random_labels_come_from_another_set(tokenizer):
    ds = generate_mcq(30, tokenizer, seed=1, random_labels=True)
    seen = set()
    for p in ds:
        labels = p.meta["labels"]
        assert len(set(labels)) == 4
        assert not set(labels) & set(LABELS)
        assert set(labels) <= set(RANDOM_LABEL_POOL)
        seen.add(tuple(labels))
    assert len(seen) > 1  # drawn per prompt
    assert ds.name == "mcq_random_labels" and ds.source["random_labels"] is True
    normal = generate_mcq(5, tokenizer, seed=1)
    assert all(p.meta["labels"] == list(LABELS) for p in normal)


def test_plain_prompts_without_chat_template(tokenizer):
    ds = generate_mcq(4, tokenizer, seed=0, chat=False)
    p = ds[0]
    assert "<|im_start|>" not in p.clean
    assert p.clean.endswith(f"Answer: {p.meta['correct_content']} (")


class _CharTokenizer:
    """One token per character, plus one extra when "zzz (A)" occurs: moving the content 'zzz'
    away from label A changes the length, so such pairs must be dropped."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text] + ([0] if "zzz (A)" in text else [])}


def test_pairs_with_unequal_lengths_are_dropped_and_counted():
    items = (MCQItem("Which?", "zzz", ("b", "c", "d")),)
    ds = generate_mcq(40, _CharTokenizer(), seed=0, chat=False, items=items)
    dropped = ds.source["n_dropped_unequal_length"]
    assert dropped > 0 and len(ds) + dropped == 40
    assert all(p.meta["contents"].index("zzz") != 0 and p.meta["distractor_index"] != 0 for p in ds)


def test_bad_arguments_and_items(tmp_path, tokenizer):
    with pytest.raises(DatasetError, match="format"):
        generate_mcq(4, tokenizer, fmt="cloze")
    with pytest.raises(DatasetError, match="n must be"):
        generate_mcq(0, tokenizer)
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"question": "Q?", "answer": "a", "distractors": ["b", "c"]}\n')
    with pytest.raises(DatasetError, match=r"items.jsonl:1: 'distractors' must be a list of 3"):
        load_mcq_items(bad)
    bad.write_text('{"question": "Q?", "answer": "a", "distractors": ["b", "c", "a"]}\n')
    with pytest.raises(DatasetError, match="must all differ"):
        load_mcq_items(bad)
