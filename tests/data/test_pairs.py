"""Prompt pairs: JSONL round trip and errors, tokenization checks, grouping into batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp.core.errors import DatasetError
from interp.data.pairs import (
    PairDataset,
    PromptPair,
    load_jsonl,
    save_jsonl,
    tokenize_pairs,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "ioi_sample.jsonl"

GOOD = {
    "clean": "When Mary and John went to the store, John gave a drink to",
    "corrupt": "When Alice and Bob went to the store, Carol gave a drink to",
    "answer": " Mary",
    "distractor": " John",
}


def _pair(**over) -> PromptPair:
    return PromptPair(**{**GOOD, **over})


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load_error(tmp_path: Path, lines: list[str]) -> DatasetError:
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert str(path) in str(info.value)
    return info.value


# ------------------------------------------------------------------------------------- JSONL


def test_round_trip_keeps_pairs_and_records_provenance(tmp_path):
    ds = PairDataset([_pair(meta={"group": "a"}), _pair(answer=" Alice")], name="x")
    path = tmp_path / "sub" / "out.jsonl"
    save_jsonl(ds, path)
    back = load_jsonl(path)
    assert back.pairs == ds.pairs
    assert back.name == "out"
    assert back.source["file"] == str(path)
    assert len(back.source["sha256"]) == 64
    assert "meta" not in json.loads(path.read_text().splitlines()[1])  # empty meta left out


def test_blank_lines_are_skipped(tmp_path):
    ds = load_jsonl(_write(tmp_path, ["", json.dumps(GOOD), "   ", json.dumps(GOOD), ""]))
    assert len(ds) == 2


def test_dataset_protocol_and_frame():
    ds = PairDataset([_pair(meta={"group": 3, "template": 3}), _pair()], name="x")
    assert len(ds) == 2 and list(ds) == list(ds.pairs) and ds[1] == ds.pairs[1]
    df = ds.to_frame()
    assert len(df) == 2
    assert list(df.columns[:5]) == ["pair", "clean", "corrupt", "answer", "distractor"]
    assert df.loc[0, "group"] == 3


def test_sample_file_loads(tokenizer):
    ds = load_jsonl(SAMPLE)
    assert len(ds) == 20
    assert all(set(p.meta) == {"group"} for p in ds)
    assert tokenize_pairs(ds, tokenizer).n == 20


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        ([json.dumps(GOOD), '{"clean": "a",'], 2, "invalid JSON"),
        ([json.dumps(GOOD), "", '["a", "b"]'], 3, "expected a JSON object"),
        (
            [json.dumps({k: v for k, v in GOOD.items() if k != "answer"})],
            1,
            "missing key(s) 'answer'",
        ),
        ([json.dumps({**GOOD, "label": 1})], 1, "unknown key(s) 'label'; allowed keys: clean"),
        (
            [json.dumps(GOOD), json.dumps({**GOOD, "answer": 5})],
            2,
            "'answer' must be a non-empty string",
        ),
        ([json.dumps({**GOOD, "corrupt": ""})], 1, "got an empty string"),
        ([json.dumps({**GOOD, "meta": [1]})], 1, "'meta' must be a JSON object"),
    ],
)
def test_jsonl_errors_name_line_and_problem(tmp_path, lines, line, fragment):
    err = _load_error(tmp_path, lines)
    assert err.line == line
    assert f"pairs.jsonl:{line}:" in str(err)
    assert fragment in str(err)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no pairs"):
        load_jsonl(path)


def test_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        load_jsonl(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------ tokenization


def test_tokenize_checks_equal_lengths(tokenizer):
    ds = PairDataset([_pair(), _pair(corrupt=GOOD["corrupt"] + " quickly")], name="x")
    with pytest.raises(DatasetError) as info:
        tokenize_pairs(ds, tokenizer, source_file="my.jsonl")
    msg = str(info.value)
    assert msg.startswith("my.jsonl:2:")
    assert "14 tokens" in msg and "15" in msg


def test_tokenize_rejects_multi_token_answer(tokenizer):
    ds = PairDataset([_pair(answer="Laura")], name="x")  # no leading space: two tokens here
    with pytest.raises(DatasetError) as info:
        tokenize_pairs(ds, tokenizer)
    msg = str(info.value)
    assert msg.startswith("line 1:")
    assert "answer 'Laura' is 2 tokens ['L', 'aura']" in msg
    assert "leading space" in msg and "try ' Laura'" in msg


def test_tokenize_rejects_multi_token_distractor(tokenizer):
    ds = PairDataset([_pair(), _pair(), _pair(distractor=" Xiomara")], name="x")
    with pytest.raises(DatasetError, match=r"line 3: distractor ' Xiomara' is 3 tokens \[' Xi'"):
        tokenize_pairs(ds, tokenizer)


def test_tokenize_rejects_answer_equal_to_distractor(tokenizer):
    ds = PairDataset([_pair(distractor=" Mary")], name="x")
    with pytest.raises(DatasetError, match="same token"):
        tokenize_pairs(ds, tokenizer)


def test_batches_group_by_length_and_group(tokenizer):
    short = {"clean": "Mary gave it to", "corrupt": "Alice gave it to"}
    ds = PairDataset(
        [
            _pair(meta={"group": "a"}),
            _pair(**short, meta={"group": "a"}),
            _pair(meta={"group": "b"}),
            _pair(meta={"group": "a"}),
            _pair(**short),
        ],
        name="x",
    )
    tp = tokenize_pairs(ds, tokenizer)
    assert tp.n == 5
    assert [b.indices for b in tp.batches] == [[0, 3], [1], [2], [4]]
    assert [b.key for b in tp.batches] == [(14, "a"), (4, "a"), (14, "b"), (4, None)]
    first = tp.batches[0]
    assert first.clean.shape == first.corrupt.shape == (2, 14)
    assert first.clean.dtype == torch.long
    mary, john = (
        tokenizer(" Mary", add_special_tokens=False)["input_ids"][0],
        tokenizer(" John", add_special_tokens=False)["input_ids"][0],
    )
    assert first.answer_ids.tolist() == [mary, mary]
    assert first.distractor_ids.tolist() == [john, john]
    expected = tokenizer(GOOD["clean"], add_special_tokens=False)["input_ids"]
    assert first.clean[0].tolist() == expected
    assert tp.largest_batch() is first


def test_prepend_bos(tokenizer):
    tp = tokenize_pairs(PairDataset([_pair()], name="x"), tokenizer, prepend_bos=True)
    b = tp.batches[0]
    assert b.key == (15, None)
    assert b.clean[0, 0].item() == tokenizer.bos_token_id == b.corrupt[0, 0].item()
