"""IOI generator: determinism, equal lengths, single-token answers, corruptions, positions."""

from __future__ import annotations

import pytest

from interp.core.errors import DatasetError
from interp.data.ioi import DEFAULT_NAMES, IOI_TEMPLATES, generate_ioi, single_token_names
from interp.data.pairs import tokenize_pairs


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_enough_templates_in_both_orders():
    assert len(IOI_TEMPLATES) >= 15
    for t in IOI_TEMPLATES:
        assert t.count("[IO]") == 1 and t.count("[S]") == 2
        assert not t.startswith("[")  # every name follows a space, so it stays one token
    orders = {t.index("[IO]") < t.index("[S]") for t in IOI_TEMPLATES}
    assert orders == {True, False}


def test_single_token_names(tokenizer):
    names = single_token_names(tokenizer)
    assert len(DEFAULT_NAMES) >= 100
    assert len(names) >= 100
    assert all(len(_ids(tokenizer, " " + n)) == 1 for n in names)
    assert single_token_names(tokenizer, ["Mary", "Xiomara", "Mary"]) == ["Mary"]


def test_seeded_determinism(tokenizer):
    a = generate_ioi(30, tokenizer, seed=1)
    b = generate_ioi(30, tokenizer, seed=1)
    c = generate_ioi(30, tokenizer, seed=2)
    assert a.pairs == b.pairs
    assert a.pairs != c.pairs
    assert a.source["seed"] == 1 and a.source["corruption"] == "abc"


@pytest.mark.parametrize("corruption", ["abc", "flip"])
def test_equal_lengths_and_single_token_answers(tokenizer, corruption):
    ds = generate_ioi(200, tokenizer, seed=0, corruption=corruption)
    for p in ds:
        assert len(_ids(tokenizer, p.clean)) == len(_ids(tokenizer, p.corrupt))
        assert len(_ids(tokenizer, p.answer)) == 1
        assert len(_ids(tokenizer, p.distractor)) == 1
        assert p.answer == " " + p.meta["io"] and p.distractor == " " + p.meta["s"]
    tp = tokenize_pairs(ds, tokenizer)  # must pass validation
    assert tp.n == 200
    assert all(b.key[1] == ds[b.indices[0]].meta["template"] for b in tp.batches)


def test_abc_corruption_uses_three_fresh_names(tokenizer):
    names = set(single_token_names(tokenizer))
    for p in generate_ioi(100, tokenizer, seed=3, corruption="abc"):
        fresh = p.meta["corrupt_names"]
        a, b, c = fresh["IO"], fresh["S1"], fresh["S2"]
        assert len({a, b, c}) == 3
        assert {a, b, c}.isdisjoint({p.meta["io"], p.meta["s"]})
        for name in (p.meta["io"], p.meta["s"]):
            assert f" {name} " not in p.corrupt and f" {name}," not in p.corrupt
        corrupt_names = [w.strip(",.") for w in p.corrupt.split() if w.strip(",.") in names]
        assert sorted(corrupt_names) == sorted([a, b, c])


def test_flip_swaps_io_and_s(tokenizer):
    for p in generate_ioi(50, tokenizer, seed=4, corruption="flip"):
        io, s = p.meta["io"], p.meta["s"]
        swapped = (
            p.clean.replace(f" {io}", " \0").replace(f" {s}", f" {io}").replace(" \0", f" {s}")
        )
        assert p.corrupt == swapped
        assert p.corrupt != p.clean


def test_positions_point_at_names(tokenizer):
    for p in generate_ioi(100, tokenizer, seed=5):
        ids = _ids(tokenizer, p.clean)
        pos = p.meta["positions"]
        io_id, s_id = _ids(tokenizer, p.answer)[0], _ids(tokenizer, p.distractor)[0]
        assert ids[pos["IO"]] == io_id
        assert ids[pos["S1"]] == s_id and ids[pos["S2"]] == s_id
        assert pos["S1"] < pos["S2"] and pos["END"] == len(ids) - 1
        assert (pos["IO"] < pos["S1"]) == (p.meta["order"] == "ABBA")
        # an independent check: the only occurrences of the names are those positions
        assert [i for i, t in enumerate(ids) if t == io_id] == [pos["IO"]]
        assert [i for i, t in enumerate(ids) if t == s_id] == [pos["S1"], pos["S2"]]


def test_template_selection(tokenizer):
    ds = generate_ioi(20, tokenizer, templates=[0, 15])
    assert {p.meta["template"] for p in ds} <= {0, 15}
    assert all(p.meta["group"] == p.meta["template"] for p in ds)


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match=r"allowed: integers 0\.\.29"):
        generate_ioi(5, tokenizer, templates=[99])
    with pytest.raises(ValueError, match="allowed: abc, flip"):
        generate_ioi(5, tokenizer, corruption="swap")
    with pytest.raises(ValueError, match="positive integer"):
        generate_ioi(0, tokenizer)
    with pytest.raises(DatasetError, match="Xiomara"):
        generate_ioi(5, tokenizer, names=["Mary", "John", "Xiomara"])
    with pytest.raises(DatasetError, match="at least 5"):
        generate_ioi(5, tokenizer, names=["Mary", "John", "Alice"])
    assert len(generate_ioi(5, tokenizer, corruption="flip", names=["Mary", "John"])) == 5
