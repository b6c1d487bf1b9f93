"""Prompt pairs for activation patching: a clean prompt, a corrupt one, and two answer tokens.

Patching experiments (Meng et al. 2022; Wang et al. 2022) run a *clean* and a *corrupt* prompt of
equal token length and score each patch with the logit difference between an *answer* token and
a *distractor* token. This module holds such pairs (`PromptPair`, `PairDataset`), reads and
writes them as JSONL (one object per line, with exactly the keys ``clean``, ``corrupt``,
``answer``, ``distractor`` and an optional ``meta`` object), and tokenizes them into batches of
equal length (`tokenize_pairs`), checking everything the metric relies on.

    >>> ds = load_jsonl("data/ioi_sample.jsonl")
    >>> tp = tokenize_pairs(ds, tokenizer)           # a Hugging Face tokenizer
    >>> b = tp.largest_batch()
    >>> b.clean.shape, b.answer_ids.shape             # ((n, T), (n,))

Errors are `DatasetError`s naming the file and the 1-based physical line of the file (pairs read
by `load_jsonl` remember their line; generated pairs use their index + 1). `check_jsonl` reports
every broken line of a file at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from interp.core.errors import DatasetError
from interp.core.types import Int, Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REQUIRED_KEYS = ("clean", "corrupt", "answer", "distractor")
ALLOWED_KEYS = (*REQUIRED_KEYS, "meta")


@dataclass(frozen=True)
class PromptPair:
    """One clean/corrupt prompt pair; `answer` and `distractor` are judged on the clean prompt."""

    clean: str
    corrupt: str
    answer: str
    distractor: str
    meta: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)  # physical file line (load_jsonl)


@dataclass(frozen=True)
class PairDataset:
    """An ordered set of pairs with its provenance (generator + params, or file + sha256)."""

    pairs: tuple[PromptPair, ...]
    name: str
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PromptPair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PromptPair:
        return self.pairs[index]

    def to_frame(self) -> pd.DataFrame:
        """One row per pair: ``pair`` (index), the four texts, then one column per meta key."""
        rows = []
        for i, p in enumerate(self.pairs):
            row: dict[str, Any] = {
                "pair": i,
                "clean": p.clean,
                "corrupt": p.corrupt,
                "answer": p.answer,
                "distractor": p.distractor,
            }
            for k, v in p.meta.items():
                row[f"meta_{k}" if k in row else k] = v
            rows.append(row)
        columns = ["pair", *REQUIRED_KEYS]
        return pd.DataFrame(rows, columns=None if rows else columns)


# ---------------------------------------------------------------------------------------- JSONL


def _describe(value: Any) -> str:
    kind = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
    return f"{kind} {json.dumps(value)[:40]}" if kind != "null" else kind


def check_keys(obj: dict, allowed: Sequence[str], required: Sequence[str], *, line: int | None, file: str | None,
               needs: str, where: str = "") -> None:
    """A `DatasetError` (naming file:line) for keys of a JSON line outside `allowed`, then for
    `required` keys it lacks; `needs` ends the second message, `where` (e.g. " in a fact line")
    follows the key list in both."""
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise DatasetError(f"unknown key(s) {', '.join(map(repr, unknown))}{where}; allowed keys: {', '.join(allowed)}",
                           line=line, file=file)
    missing = [k for k in required if k not in obj]
    if missing:
        raise DatasetError(f"missing key(s) {', '.join(map(repr, missing))}{where}; {needs}", line=line, file=file)


def _parse_pair(obj: Any, line: int, file: str) -> PromptPair:
    if not isinstance(obj, dict):
        raise DatasetError(
            f"expected a JSON object with keys {', '.join(REQUIRED_KEYS)} (and optional meta), "
            f"got {_describe(obj)}",
            line=line,
            file=file,
        )
    check_keys(obj, ALLOWED_KEYS, REQUIRED_KEYS, line=line, file=file,
               needs=f"every line needs {', '.join(REQUIRED_KEYS)} (meta is optional)")
    for k in REQUIRED_KEYS:
        v = obj[k]
        if not isinstance(v, str):
            raise DatasetError(
                f"{k!r} must be a non-empty string, got {_describe(v)}", line=line, file=file
            )
        if not v:
            raise DatasetError(
                f"{k!r} must be a non-empty string, got an empty string", line=line, file=file
            )
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DatasetError(
            f"'meta' must be a JSON object, got {_describe(meta)}", line=line, file=file
        )
    return PromptPair(obj["clean"], obj["corrupt"], obj["answer"], obj["distractor"], meta, line=line)


def _read_text(path: Path) -> tuple[bytes, str]:
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read the dataset file ({e.strerror or e})", file=file) from e
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"file is not valid UTF-8 (byte {e.start}); save it as UTF-8", file=file
        ) from e


def json_line(line: str, line_no: int, file: str) -> Any:
    """One JSONL line parsed, or a `DatasetError` naming file:line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"invalid JSON ({e.msg} at column {e.colno}); each line must be one JSON object",
            line=line_no,
            file=file,
        ) from e


def _parse_line(line: str, line_no: int, file: str) -> PromptPair:
    return _parse_pair(json_line(line, line_no, file), line_no, file)


def _no_pairs(file: str) -> DatasetError:
    return DatasetError(
        "file has no pairs (it is empty or only blank lines); expected one JSON object per "
        f"line with keys {', '.join(REQUIRED_KEYS)}",
        file=file,
    )


def load_jsonl(path: str | Path) -> PairDataset:
    """Read pairs from a JSONL file; blank lines are skipped, anything else invalid raises."""
    path = Path(path)
    file = str(path)
    raw, text = _read_text(path)
    pairs = [_parse_line(line, n, file) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not pairs:
        raise _no_pairs(file)
    source = {"file": file, "sha256": hashlib.sha256(raw).hexdigest()}
    return PairDataset(tuple(pairs), name=path.stem, source=source)


def check_jsonl(path: str | Path, tokenizer: PreTrainedTokenizerBase, *, prepend_bos: bool = False) -> int:
    """Check every line of a pairs file (JSON, keys, then tokens: equal clean/corrupt lengths,
    single-token answer and distractor); returns the number of pairs, or raises one
    `DatasetError` listing every broken line by its physical line number."""
    path = Path(path)
    file = str(path)
    _, text = _read_text(path)
    bos = _bos_ids(tokenizer, prepend_bos)
    errors: list[DatasetError] = []
    n = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            _pair_tokens(_parse_line(line, line_no, file), tokenizer, bos, line_no, file)
            n += 1
        except DatasetError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DatasetError(f"{len(errors)} broken lines:\n" + "\n".join(f"  {e}" for e in errors), file=file)
    if not n:
        raise _no_pairs(file)
    return n


def save_jsonl(dataset: PairDataset, path: str | Path) -> None:
    """Write one JSON object per pair (``meta`` left out when empty); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in dataset:
            obj: dict[str, Any] = {k: getattr(p, k) for k in REQUIRED_KEYS}
            if p.meta:
                obj["meta"] = p.meta
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------- batches


@dataclass
class PairBatch:
    """Pairs sharing one token length (and one ``meta["group"]``), stacked as tensors."""

    clean: Int[Tensor, "n pos"]
    corrupt: Int[Tensor, "n pos"]
    answer_ids: Int[Tensor, " n"]
    distractor_ids: Int[Tensor, " n"]
    indices: list[int]  # positions of these pairs in the dataset
    key: tuple[int, Hashable]  # (token length, group)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class TokenizedPairs:
    """A dataset tokenized into equal-length batches, in order of first appearance."""

    batches: list[PairBatch]
    n: int  # total number of pairs

    def __iter__(self) -> Iterator[PairBatch]:
        return iter(self.batches)

    def largest_batch(self) -> PairBatch:
        """The batch with the most pairs (the first one on ties)."""
        if not self.batches:
            raise DatasetError("no batches: the dataset has no pairs")
        return max(self.batches, key=len)

    def by_length(self) -> TokenizedPairs:
        """The same pairs regrouped by token length only (groups merged), for analyses that
        do not resolve positions and so gain from larger batches."""
        merged: dict[int, list[PairBatch]] = {}
        for b in self.batches:
            merged.setdefault(b.clean.shape[1], []).append(b)
        out = []
        for length, parts in merged.items():
            out.append(
                PairBatch(
                    clean=torch.cat([p.clean for p in parts]),
                    corrupt=torch.cat([p.corrupt for p in parts]),
                    answer_ids=torch.cat([p.answer_ids for p in parts]),
                    distractor_ids=torch.cat([p.distractor_ids for p in parts]),
                    indices=[i for p in parts for i in p.indices],
                    key=(length, None),
                )
            )
        return TokenizedPairs(batches=out, n=self.n)


def bos_text(tokenizer: PreTrainedTokenizerBase) -> str:
    """The BOS token as text for plain (non-chat) prompts of a model that expects one first
    (`load_model` marks such tokenizers; a chat template adds its own)."""
    if getattr(tokenizer, "interp_prepend_bos", False) and getattr(tokenizer, "bos_token", None):
        return tokenizer.bos_token
    return ""


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _single_token(
    tokenizer: PreTrainedTokenizerBase, role: str, text: str, line: int, file: str | None
) -> int:
    ids = _encode(tokenizer, text)
    if len(ids) == 1:
        return ids[0]
    pieces = [tokenizer.decode([i]) for i in ids]
    hint = "a leading space usually matters"
    if not text.startswith(" "):
        hint += f": try {' ' + text.strip()!r} instead of {text!r}"
    else:
        hint += ", e.g. ' Mary' is often one token where 'Mary' is not"
    raise DatasetError(
        f"{role} {text!r} is {len(ids)} tokens {pieces!r}; the logit-difference metric needs "
        f"exactly one token ({hint})",
        line=line,
        file=file,
    )


def _bos_ids(tokenizer: PreTrainedTokenizerBase, prepend_bos: bool) -> list[int]:
    if not prepend_bos:
        return []
    if tokenizer.bos_token_id is None:
        raise DatasetError("prepend_bos=True but the tokenizer has no BOS token; pass False")
    return [tokenizer.bos_token_id]


def _pair_tokens(pair: PromptPair, tokenizer: PreTrainedTokenizerBase, bos: list[int], line: int,
                 file: str | None) -> tuple[list[int], list[int], int, int]:
    """(clean ids, corrupt ids, answer id, distractor id) of one pair, or a `DatasetError`."""
    clean = bos + _encode(tokenizer, pair.clean)
    corrupt = bos + _encode(tokenizer, pair.corrupt)
    if len(clean) != len(corrupt):
        raise DatasetError(
            f"clean prompt has {len(clean)} tokens but corrupt has {len(corrupt)}; patching "
            "needs equal lengths (corrupt only single-token words, e.g. names)",
            line=line,
            file=file,
        )
    answer = _single_token(tokenizer, "answer", pair.answer, line, file)
    distractor = _single_token(tokenizer, "distractor", pair.distractor, line, file)
    if answer == distractor:
        raise DatasetError(
            f"answer {pair.answer!r} and distractor {pair.distractor!r} are the same token "
            f"(id {answer}); the logit difference would always be 0",
            line=line,
            file=file,
        )
    if not isinstance(pair.meta.get("group"), Hashable):
        raise DatasetError(
            f"meta.group must be a string or number, got {_describe(pair.meta.get('group'))}",
            line=line,
            file=file,
        )
    return clean, corrupt, answer, distractor


def tokenize_pairs(
    dataset: PairDataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    prepend_bos: bool = False,
    source_file: str | None = None,
) -> TokenizedPairs:
    """Tokenize and validate every pair, then group them by (token length, ``meta["group"]``).

    Raises `DatasetError` on the first pair whose clean and corrupt lengths differ, whose answer
    or distractor is not exactly one token, or whose answer equals its distractor. Errors name
    `source_file` (default: the dataset's ``source["file"]``) and the pair's file line (pair
    index + 1 for generated pairs).
    """
    file = source_file if source_file is not None else dataset.source.get("file")
    bos = _bos_ids(tokenizer, prepend_bos)
    groups: dict[tuple[int, Hashable], list[tuple[int, list[int], list[int], int, int]]] = {}
    for i, pair in enumerate(dataset):
        line = pair.line if pair.line is not None else i + 1
        clean, corrupt, answer, distractor = _pair_tokens(pair, tokenizer, bos, line, file)
        groups.setdefault((len(clean), pair.meta.get("group")), []).append((i, clean, corrupt, answer, distractor))
    batches = [
        PairBatch(
            clean=torch.tensor([r[1] for r in rows], dtype=torch.long),
            corrupt=torch.tensor([r[2] for r in rows], dtype=torch.long),
            answer_ids=torch.tensor([r[3] for r in rows], dtype=torch.long),
            distractor_ids=torch.tensor([r[4] for r in rows], dtype=torch.long),
            indices=[r[0] for r in rows],
            key=key,
        )
        for key, rows in groups.items()
    ]
    return TokenizedPairs(batches=batches, n=len(dataset))
