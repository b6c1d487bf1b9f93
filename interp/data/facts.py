"""The fact table of the knowledge-conflict experiment (``data/facts.jsonl``): relations with
their question and cloze templates, and (subject, relation, object) facts.

Two kinds of lines:

- a relation: ``{"relation": "capital_of", "question": "What is the capital of {subject}?",
  "cloze": "The capital of {subject} is"}``; both templates hold ``{subject}`` once;
- a fact: ``{"subject": "France", "relation": "capital_of", "object": "Paris"}``.

    table = load_facts()          # data/facts.jsonl; errors are `DatasetError`s naming the line

The prompts built from it are in `interp.data.knowledge`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interp.core.errors import DatasetError
from interp.data.pairs import check_keys, json_line

DEFAULT_FACTS = Path(__file__).resolve().parents[2] / "data" / "facts.jsonl"
RELATION_KEYS = ("relation", "question", "cloze")
FACT_KEYS = ("subject", "relation", "object")
_FIELD = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Relation:
    name: str
    question: str  # "What is the capital of {subject}?"
    cloze: str  # "The capital of {subject} is" (no trailing space: the answer token has one)

    def render_question(self, subject: str) -> str:
        return _capitalise(self.question.replace("{subject}", subject))

    def render_cloze(self, subject: str) -> str:
        return _capitalise(self.cloze.replace("{subject}", subject))

    def statement(self, subject: str, obj: str) -> str:
        """The context sentence: "The capital of France is Rome." """
        return f"{self.render_cloze(subject)} {obj}."


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str
    line: int | None = None  # where it came from in the table (1-based)


@dataclass(frozen=True)
class FactTable:
    relations: dict[str, Relation]
    facts: tuple[Fact, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.facts)

    def objects(self, relation: str) -> list[str]:
        """The distinct objects of a relation, in table order."""
        return list(dict.fromkeys(f.object for f in self.facts if f.relation == relation))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"subject": f.subject, "relation": f.relation, "object": f.object}
                for f in self.facts
            ],
            columns=list(FACT_KEYS),
        )


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------- loading


def _check_template(value: Any, key: str, line: int, file: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{key!r} must be a non-empty string", line=line, file=file)
    fields = _FIELD.findall(value)
    if fields != ["subject"] or value.count("{") != 1 or value.count("}") != 1:
        raise DatasetError(
            f"{key!r} template {value!r} must contain '{{subject}}' exactly once and no other "
            "braces",
            line=line,
            file=file,
        )
    if key == "cloze" and value != value.rstrip():
        raise DatasetError(
            "'cloze' must not end with a space (the answer token carries its own leading space)",
            line=line,
            file=file,
        )
    return value


def _parse_line(obj: Any, line: int, file: str) -> Relation | Fact:
    if not isinstance(obj, dict):
        raise DatasetError(
            "expected a JSON object: a relation (keys relation, question, cloze) or a fact "
            "(keys subject, relation, object)",
            line=line,
            file=file,
        )
    kind = "fact" if "subject" in obj or "object" in obj else "relation"
    allowed = FACT_KEYS if kind == "fact" else RELATION_KEYS
    check_keys(obj, allowed, allowed, line=line, file=file, where=f" in a {kind} line",
               needs=f"a {kind} needs {', '.join(allowed)}")
    if kind == "relation":
        name = obj["relation"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise DatasetError(
                f"relation name must be letters, digits and '_', got {json.dumps(name)}",
                line=line,
                file=file,
            )
        return Relation(
            name,
            _check_template(obj["question"], "question", line, file),
            _check_template(obj["cloze"], "cloze", line, file),
        )
    for k in FACT_KEYS:
        v = obj[k]
        if not isinstance(v, str) or not v.strip() or v != v.strip():
            raise DatasetError(
                f"{k!r} must be a non-empty string without surrounding spaces, got {json.dumps(v)}",
                line=line,
                file=file,
            )
    return Fact(obj["subject"], obj["relation"], obj["object"], line)


def _read_table(text: str, file: str) -> tuple[dict[str, Relation], dict[str, int], list[Fact]]:
    """(relations, the line defining each, facts) of the table's lines, each checked once."""
    relations: dict[str, Relation] = {}
    relation_line: dict[str, int] = {}
    facts: list[Fact] = []
    seen: dict[tuple[str, str], int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _parse_line(json_line(line, line_no, file), line_no, file)
        if isinstance(item, Relation):
            if item.name in relations:
                raise DatasetError(
                    f"relation {item.name!r} is defined twice (first on line "
                    f"{relation_line[item.name]})",
                    line=line_no,
                    file=file,
                )
            relations[item.name] = item
            relation_line[item.name] = line_no
            continue
        key = (item.subject, item.relation)
        if key in seen:
            raise DatasetError(
                f"fact ({item.subject!r}, {item.relation!r}) repeats line {seen[key]}",
                line=line_no,
                file=file,
            )
        seen[key] = line_no
        facts.append(item)
    if not facts:
        raise DatasetError("the fact table has no facts", file=file)
    return relations, relation_line, facts


def _check_fact_relations(facts: list[Fact], relations: dict[str, Relation], file: str) -> None:
    for f in facts:
        if f.relation not in relations:
            known = ", ".join(relations) or "none"
            raise DatasetError(
                f"unknown relation {f.relation!r}; defined relations: {known} (define it with "
                '{"relation": ..., "question": ..., "cloze": ...})',
                line=f.line,
                file=file,
            )


def load_facts(path: str | Path | None = None) -> FactTable:
    """Read and validate a fact table (default ``data/facts.jsonl``); blank lines are skipped.

    Checks: valid JSON objects with exactly the keys of a relation or a fact, templates with
    ``{subject}`` once, each relation defined once, every fact's relation defined, no repeated
    (subject, relation), and at least two distinct objects per relation (a counterfactual needs
    another object)."""
    path = Path(path) if path is not None else DEFAULT_FACTS
    file = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as e:
        raise DatasetError(f"cannot read the fact table ({e.strerror or e})", file=file) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"file is not valid UTF-8 (byte {e.start})", file=file) from e
    relations, relation_line, facts = _read_table(text, file)
    _check_fact_relations(facts, relations, file)
    table = FactTable(
        relations, tuple(facts), {"file": file, "sha256": hashlib.sha256(raw).hexdigest()}
    )
    for name in relations:
        if len(table.objects(name)) < 2 and any(f.relation == name for f in facts):
            raise DatasetError(
                f"relation {name!r} has fewer than 2 distinct objects; a counterfactual "
                "context needs another object of the same relation",
                line=relation_line[name],
                file=file,
            )
    return table
