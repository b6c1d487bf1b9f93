"""The config of the ``speech_saliency`` kind (`interp/io/kinds/speech.py` registers it with its
steps): model, data (espeak or files), cross-attention, SPES, integrated gradients, comparison,
deletion and output sections."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictStr, ValidationInfo, field_validator, model_validator

from interp.data.speech import DEFAULT_SPEEDS, DEFAULT_VOICES
from interp.io.schema import (
    BaseExperimentConfig,
    FieldError,
    ModelConfig,
    NonNegativeInt,
    OutputConfig,
    PositiveInt,
    Section,
    non_empty,
    resolve_config_path,
)
from interp.models.registry import BUNDLED_SOURCES

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
Speed = Annotated[int, Field(ge=80, le=450)]
_AGG = r"^(all|last[1-9]\d*|L\d+|L\d+\.H\d+)$"


class SpeechModelConfig(ModelConfig):
    modality: ClassVar[str | None] = "speech"
    modality_label: ClassVar[str] = "speech-to-text"
    models_label: ClassVar[str] = "speech models"
    allowed: ClassVar[str] = ", ".join(n for n, (_, modality) in BUNDLED_SOURCES.items() if modality == "speech")

    name: StrictStr = Field("whisper-tiny.en", description="a speech model name: whisper-tiny.en")


class SpeechDataConfig(Section):
    source: Literal["espeak", "files"] = "espeak"
    n_utterances: PositiveInt = Field(6, description="an integer >= 1 (espeak only)")
    voices: tuple[StrictStr, ...] = Field(DEFAULT_VOICES,
                                          description="a non-empty list of espeak-ng voices (espeak only)")
    speeds: tuple[Speed, ...] = Field(DEFAULT_SPEEDS,
                                      description="a non-empty list of words per minute in 80..450 (espeak only)")
    path: Path | None = Field(None, description="a YAML list of {audio, text} or a folder of .wav + .txt (files only)")
    max_utterances: PositiveInt | None = Field(None, description="null (all) or an integer >= 1 (files only)")

    @field_validator("voices", "speeds")
    @classmethod
    def _not_empty(cls, value: tuple) -> tuple:
        return non_empty(value)

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        must = "exist" if info.data.get("source") == "files" else None
        return resolve_config_path(path, info, must=must, what="audio path")

    @model_validator(mode="after")
    def _fields_match_source(self) -> SpeechDataConfig:
        if self.source == "files" and self.path is None:
            raise FieldError("path", "required when data.source is 'files'")
        only_for = {"espeak": ("path", "max_utterances"), "files": ("n_utterances", "voices", "speeds")}
        for name in only_for[self.source]:
            default = type(self).model_fields[name].default
            if getattr(self, name) != default:
                other = "files" if self.source == "espeak" else "espeak"
                raise FieldError(name, f"only used when data.source is '{other}' (it is '{self.source}'); remove it")
        return self


class CrossAttentionConfig(Section):
    last_layers: PositiveInt = Field(2, description="an integer >= 1: the 'last layers' aggregation")


class SpesConfig(Section):
    enabled: StrictBool = True
    mode: Literal["occlusion", "random"] = "occlusion"
    patch_frames: PositiveInt = Field(10, description="an integer >= 1: patch width in 10 ms mel frames")
    patch_mels: PositiveInt = Field(40, description="an integer >= 1: patch height in mel bins (of 80)")
    n_masks: PositiveInt = Field(64, description="an integer >= 2 (random mode): masks per utterance")
    mask_prob: Probability = 0.5
    scales: tuple[PositiveInt, ...] = Field((1, 2), description="patch size multipliers (random mode)")
    pooling: Literal["max", "mean"] = "max"
    batch_size: PositiveInt = 8
    max_forwards: PositiveInt = Field(
        400, description="an integer >= 1: the most forwards one utterance may cost (occlusion: one per patch)"
    )

    @field_validator("scales")
    @classmethod
    def _not_empty(cls, value: tuple) -> tuple:
        return non_empty(value)

    @model_validator(mode="after")
    def _random_fields(self) -> SpesConfig:
        if self.mode == "random" and self.n_masks < 2:
            raise FieldError("n_masks", "random mode needs at least 2 masks")
        if self.mode == "random" and self.n_masks > self.max_forwards:
            raise FieldError("n_masks", f"{self.n_masks} masks exceed max_forwards={self.max_forwards}")
        return self


class IntegratedGradientsConfig(Section):
    enabled: StrictBool = True
    steps: PositiveInt = Field(8, description="an integer >= 1: interpolation steps per output token")
    method: Literal[
        "gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"] = "gausslegendre"
    pooling: Literal["max", "mean"] = "max"
    max_utterances: PositiveInt | None = Field(
        2, description="null (all) or an integer >= 1: IG costs tokens x steps backward passes per utterance"
    )
    internal_batch_size: PositiveInt = 8


class ComparisonConfig(Section):
    capture_top_fraction: Fraction = 0.2


class DeletionConfig(Section):
    enabled: StrictBool = True
    step: Fraction = 0.05
    max_fraction: Fraction = 1.0
    ca_aggregations: tuple[StrictStr, ...] = Field(
        ("all",), description="aggregations to test: all, last<k>, L<layer>, L<layer>.H<head>"
    )
    n_random: PositiveInt = Field(1, description="an integer >= 1: random rankings per utterance")
    batch_size: PositiveInt = 8

    @field_validator("ca_aggregations")
    @classmethod
    def _aggregation_names(cls, value: tuple) -> tuple:
        for item in value:
            if not re.match(_AGG, item):
                raise ValueError(f"unknown aggregation {item!r}; allowed: all, last<k>, L<layer>, L<layer>.H<head> "
                                 "(e.g. last2, L3, L3.H1)")
        return non_empty(value)

    @model_validator(mode="after")
    def _step_fits(self) -> DeletionConfig:
        if self.step > self.max_fraction:
            raise FieldError("step", f"step {self.step} exceeds max_fraction {self.max_fraction}")
        return self


class SpeechAnalysesConfig(Section):
    cross_attention: CrossAttentionConfig = CrossAttentionConfig()
    spes: SpesConfig = SpesConfig()
    integrated_gradients: IntegratedGradientsConfig = IntegratedGradientsConfig()
    comparison: ComparisonConfig = ComparisonConfig()
    deletion: DeletionConfig = DeletionConfig()


class SpeechOutputConfig(OutputConfig):
    example_utterances: NonNegativeInt = Field(2, description="an integer >= 0: utterances drawn as map figures")


class SpeechSaliencyConfig(BaseExperimentConfig):
    """Cross-attention vs saliency on a speech-to-text model (see the module docstring)."""

    kind: Literal["speech_saliency"] = "speech_saliency"
    model: SpeechModelConfig = SpeechModelConfig()
    data: SpeechDataConfig = SpeechDataConfig()
    analyses: SpeechAnalysesConfig = SpeechAnalysesConfig()
    output: SpeechOutputConfig = SpeechOutputConfig()

    @model_validator(mode="after")
    def _something_to_compare(self) -> SpeechSaliencyConfig:
        a = self.analyses
        if not (a.spes.enabled or a.integrated_gradients.enabled):
            raise FieldError("analyses", "enable spes or integrated_gradients: "
                                         "cross-attention needs a saliency to compare with")
        return self
