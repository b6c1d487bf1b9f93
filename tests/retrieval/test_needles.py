"""Needle-in-a-haystack data: needle file validation, exact answer spans, depths, cycling."""

from __future__ import annotations

import json

import pytest

from interp.core.errors import DatasetError
from interp.data.needles import Needle, build_trials, load_haystack, load_needles, rouge1_recall

NEEDLE = Needle("The password for the old library computer is purple elephant seven.",
                "What is the password for the old library computer?", "purple elephant seven")


def test_bundled_needles_and_haystack_load():
    needles = load_needles()
    assert len(needles) >= 6 and all(n.answer in n.needle for n in needles)
    assert len(load_haystack().split()) > 1500  # enough prose for ~2k-token contexts without repeats


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    ('["a"]', "JSON object"),
    ('{"needle": "x y", "question": "q"}', "missing key(s) 'answer'; a needle needs needle, question, answer"),
    ('{"needle": "x y", "question": "q", "answer": 3}', "'answer' must be a non-empty string"),
    ('{"needle": "x y", "question": "q", "answer": "z"}', "does not occur verbatim"),
    ('{"needle": "x y", "question": "q", "answer": "y", "hint": 1}',
     "unknown key(s) 'hint'; allowed keys: needle, question, answer"),
])
def test_bad_needle_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "n.jsonl"
    good = json.dumps({"needle": "a b", "question": "q", "answer": "b"})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DatasetError) as e:
        load_needles(path)
    assert f"{path}:2" in str(e.value) and message in str(e.value)


def test_missing_needles_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_needles(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_span_holds_exactly_the_answer(tokenizer, depth, chat):
    (trial,) = build_trials(tokenizer, [NEEDLE], [300], [depth], chat=chat)
    a, b = trial.span
    assert tokenizer.decode(list(trial.prompt_ids[a:b])).strip() == NEEDLE.answer
    text = tokenizer.decode(list(trial.prompt_ids))
    assert NEEDLE.needle in text and text.rstrip().endswith(("assistant", "Answer:"))
    # the needle sits at the requested depth of the context (within a sentence of it)
    start = text.index("<document>")
    rel = (text.index(NEEDLE.needle) - start) / (text.index("</document>") - start)
    assert abs(rel - depth) < 0.15


def test_lengths_grow_and_long_contexts_cycle_the_prose(tokenizer):
    haystack_tokens = len(tokenizer(load_haystack(), add_special_tokens=False)["input_ids"])
    trials = build_trials(tokenizer, [NEEDLE], [200, 800, haystack_tokens + 500], [0.5])
    sizes = [t.n_tokens for t in trials]
    assert sizes == sorted(sizes) and sizes[-1] > haystack_tokens + 500
    assert [t.context_length for t in trials] == [200, 800, haystack_tokens + 500]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(lengths=[100], depths=[1.5]), "outside [0, 1]"),
    (dict(lengths=[0], depths=[0.5]), ">= 1 token"),
])
def test_bad_grid(tokenizer, kwargs, message):
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_trials(tokenizer, [NEEDLE], **kwargs)


def test_rouge1_recall():
    assert rouge1_recall("purple elephant seven", "It is Purple elephant seven.") == 1.0
    assert rouge1_recall("purple elephant seven", "purple seven") == pytest.approx(2 / 3)
    assert rouge1_recall("a a b", "a b") == pytest.approx(2 / 3)  # words count with multiplicity
    assert rouge1_recall("x", "") == 0.0
