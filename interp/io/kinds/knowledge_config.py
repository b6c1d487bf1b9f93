"""The config of the ``knowledge_conflicts`` kind (`interp/io/kinds/knowledge.py` registers it with
its steps): the fact table and relations, the rates, heads and PH3 analyses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from interp.io import schema
from interp.io.schema import (
    BaseExperimentConfig,
    ChatSetting,
    ConfigPath,
    Enabled,
    FieldError,
    NonNegativeInt,
    PositiveInt,
    Section,
    Unique,
    unique_items,
)

RelationName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_]+$")]


class KnowledgeDataConfig(Section):
    facts: Annotated[Path | None, ConfigPath("fact table")] = Field(
        None, description="null (the bundled data/facts.jsonl) or a path to a fact table JSONL file"
    )
    chat: ChatSetting = None
    relations: tuple[RelationName, ...] | None = Field(
        None, description="null (every relation of the table) or a list of relation names"
    )
    heldout_relations: Annotated[tuple[RelationName, ...], Unique("relations")] = Field(
        ("official_language", "landmark_country", "antonym"),
        min_length=1,
        description="a non-empty list of relation names: PH3 is evaluated on these, heads are found on the others",
    )
    max_per_relation: PositiveInt | None = Field(
        25,
        description="null (all) or an integer >= 1: known facts kept per relation (seeded sample)",
    )
    known_only: StrictBool = Field(
        True,
        description="true or false: keep only facts the model answers closed-book (false: every fact)",
    )

    @property
    def source(self) -> str:
        """What `interp validate` prints as the data source."""
        return f"fact table {self.facts or 'data/facts.jsonl'} (held out: {', '.join(self.heldout_relations)})"

    @field_validator("relations")
    @classmethod
    def _relations(cls, relations: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if relations is not None and not relations:
            raise ValueError(
                "empty list; give relation names, or null for every relation of the table"
            )
        return None if relations is None else unique_items(relations, "relations")

    @model_validator(mode="after")
    def _heldout_in_relations(self) -> KnowledgeDataConfig:
        if self.relations is not None:
            missing = [r for r in self.heldout_relations if r not in self.relations]
            if missing:
                raise FieldError(
                    "heldout_relations",
                    f"{', '.join(missing)} not in data.relations ({', '.join(self.relations)})",
                )
            if set(self.relations) <= set(self.heldout_relations):
                raise FieldError(
                    "heldout_relations",
                    "every relation is held out; leave at least one relation to find the heads on",
                )
        return self


class HeadsConfig(Enabled):
    batch_size: schema.BatchSizeSetting = Field(
        64, description="an integer >= 1 or 'auto' (sender heads stacked per forward)")


class PH3Config(Enabled):
    ks: Annotated[tuple[PositiveInt, ...], Unique()] = Field(
        (3, 10), min_length=1, description="a non-empty list of integers >= 1 (heads pruned)"
    )
    n_random: NonNegativeInt = Field(
        3, description="an integer >= 0 (random-head seeds per k and kind)"
    )
    ablation: Literal["zero", "mean"] = "zero"
    closed_book_check: StrictBool = Field(
        True,
        description="true or false: also measure closed-book accuracy on held-out facts per condition",
    )



class KnowledgeAnalysesConfig(Section):
    rates: Enabled = Enabled()
    heads: HeadsConfig = HeadsConfig()
    ph3: PH3Config = PH3Config()

    @model_validator(mode="after")
    def _ph3_needs_heads(self) -> KnowledgeAnalysesConfig:
        if self.ph3.enabled and not self.heads.enabled:
            raise FieldError(
                "ph3.enabled",
                "PH3 prunes the heads found by analyses.heads; set "
                "analyses.heads.enabled: true (or ph3.enabled: false)",
            )
        return self


class KnowledgeConflictsConfig(BaseExperimentConfig):
    kind: Literal["knowledge_conflicts"] = "knowledge_conflicts"
    data: KnowledgeDataConfig = KnowledgeDataConfig()
    analyses: KnowledgeAnalysesConfig = KnowledgeAnalysesConfig()
