"""The config of the ``edge_circuit`` kind (`interp/io/kinds/edges.py` registers it with its
steps): the prompt pairs, the edge attribution methods, the faithfulness ladder, exact edge
patching on a subset, the circuit shown and the reference IOI circuit."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictStr, field_validator, model_validator

from interp.analyses.edge_circuits import FRACTIONS
from interp.io.kinds.circuits import CircuitDataConfig
from interp.io.schema import (
    BaseExperimentConfig,
    ChatSetting,
    FieldError,
    MetricName,
    NonNegativeInt,
    PositiveInt,
    Section,
    Unique,
    non_empty,
)

# Whole-graph methods (exact patching runs on its subset only, in `exact`).
EdgeMethod = Literal["eap", "eap-ig-inputs", "eap-ig-activations"]


def _fraction(p: float) -> float:
    if not 0 < p <= 1:
        raise ValueError(f"edge fraction {p} is outside (0, 1]; each fraction must be in (0, 1]")
    return p


Fraction = Annotated[float, AfterValidator(_fraction)]


class EdgeDataConfig(CircuitDataConfig):
    """The circuit kind's data section (n_prompts, corruption, templates) and `chat` for mcq."""

    n_prompts: PositiveInt = Field(16, description="an integer >= 1")
    chat: ChatSetting = None  # mcq only


class EdgeScoresConfig(Section):
    methods: Annotated[tuple[EdgeMethod, ...], AfterValidator(non_empty), Unique("methods")] = Field(
        ("eap", "eap-ig-inputs"), description="a list of eap, eap-ig-inputs, eap-ig-activations")
    steps: PositiveInt = Field(5, description="EAP-IG's m: an integer >= 1")
    metric: MetricName = "logit_diff"
    batch_size: PositiveInt = Field(16, description="an integer >= 1: rows (edge variants x prompts) per forward "
                                    "for exact patching and circuit evaluation")
    grad_batch_size: PositiveInt = Field(20, description="an integer >= 1: rows (EAP-IG points x prompts) per "
                                         "forward with its backward for the gradient methods")


class FaithfulnessConfig(Section):
    fractions: Annotated[tuple[Fraction, ...], Unique("fractions")] = Field(
        FRACTIONS, description="a list of at least 2 edge fractions, each in (0, 1]")
    selection: Literal["topn", "greedy"] = "topn"
    absolute: Annotated[tuple[StrictBool, ...], AfterValidator(non_empty), Unique("absolute")] = Field(
        (False, True), description="a list of true (rank by |score|) and/or false (rank by signed score); "
        "MIB reports CPR from false and CMD from true")
    ablation: Literal["patching", "mean"] = "patching"
    random_baseline: StrictBool = True

    @field_validator("fractions")
    @classmethod
    def _at_least_two(cls, fractions: tuple[float, ...]) -> tuple[float, ...]:
        if len(fractions) < 2:
            raise ValueError(f"need at least 2 edge fractions for an area, got {len(fractions)}")
        return fractions


class ExactConfig(Section):
    enabled: StrictBool = True
    n_prompts: PositiveInt = Field(10, description="an integer >= 1 (the first prompts of the dataset)")
    top_heads: NonNegativeInt = Field(
        10, description="an integer >= 0: also every edge into the q/k/v of this many heads (top by the "
        "circuit method's score)")
    top_k: PositiveInt = Field(20, description="an integer >= 1 (top-k overlap)")


class EdgeCircuitParams(Section):
    method: EdgeMethod = "eap-ig-inputs"
    fraction: Fraction = Field(0.01, description="a number in (0, 1]: the circuit's share of the edges")
    absolute: StrictBool = False


class EdgeCircuitExperimentConfig(BaseExperimentConfig):
    kind: Literal["edge_circuit"] = "edge_circuit"
    task: Literal["ioi", "colored_objects", "mcq"] = "ioi"
    data: EdgeDataConfig = EdgeDataConfig()
    edges: EdgeScoresConfig = EdgeScoresConfig()
    faithfulness: FaithfulnessConfig = FaithfulnessConfig()
    exact: ExactConfig = ExactConfig()
    circuit: EdgeCircuitParams = EdgeCircuitParams()
    reference_run: StrictStr | None = Field(
        None, description="ioi only: null, 'latest' (newest complete IOI circuit run in runs_dir), "
        "'discover' (path patching in this run) or a run id/path")
    mib_export: StrictBool = True

    @model_validator(mode="after")
    def _circuit_method_scored(self) -> EdgeCircuitExperimentConfig:
        if self.circuit.method not in self.edges.methods:
            raise FieldError("circuit", f"circuit.method {self.circuit.method!r} is not among edges.methods "
                             f"({', '.join(self.edges.methods)}); add it there or pick one of those")
        if self.reference_run is not None and self.task != "ioi":
            raise FieldError("reference_run", f"the IOI circuit comparison needs task: ioi (task is {self.task}); "
                             "set reference_run: null")
        return self
