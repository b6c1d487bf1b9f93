"""Experiment kind ``speech_saliency``: does cross-attention explain a speech model's output?

Reproduces the analysis of Papi et al. 2025, "Cross-Attention is Half Explanation in
Speech-to-Text Models" (arXiv 2509.18010) on the bundled Whisper tiny.en: for each spoken
sentence, transcribe it, read the decoder's cross-attention while teacher-forcing that
transcript, compute SPES-style occlusion saliency and integrated gradients on the log-mel input,
then correlate them per output token and per head/layer aggregation, measure what share of
saliency cross-attention's top frames capture, and run deletion curves (WER after removing the
top frames of each map, against a random ranking). Writes tidy parquet tables, plotly figures
and a report; prints a summary with the numbers and the time each stage took.

The config (YAML -> `SpeechSaliencyConfig`, frozen, unknown keys rejected):

    kind: speech_saliency
    name: speech_saliency
    model: {name: whisper-tiny.en}
    data: {source: espeak, n_utterances: 6}          # or {source: files, path: clips.yaml}
    analyses: {spes: {patch_frames: 10, patch_mels: 40}, integrated_gradients: {steps: 8}}

Registered on import (listed in `interp.io.config._KIND_MODULES`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from pydantic import Field, StrictBool, StrictStr, ValidationInfo, field_validator, model_validator
from tqdm.auto import tqdm

from interp.analyses.cross_attention import (
    CrossAttentionResult,
    aggregation_sets,
    cross_attention_maps,
)
from interp.analyses.saliency import (
    SaliencyResult,
    integrated_gradients_saliency,
    spes_cost,
    spes_saliency,
)
from interp.analyses.speech_compare import (
    CorrelationResult,
    DeletionResult,
    correlate,
    deletion_curves,
    fractions_grid,
    ranking,
    utterance_scores,
    wer,
)
from interp.core.errors import ConfigError, ModelLoadError
from interp.data.speech import (
    DEFAULT_SPEEDS,
    DEFAULT_VOICES,
    SpeechDataset,
    generate_speech,
    load_speech_files,
)
from interp.io.config import (
    NonNegativeInt,
    OutputConfig,
    PositiveInt,
    _FieldError,
    _Section,
    register_experiment_kind,
    resolve_config_path,
)
from interp.io.report import ReportSection
from interp.io.runner import RunOutcome, Task, register_task
from interp.models.backends.nnsight_seq2seq import HookedSeq2SeqModel, Transcript
from interp.models.registry import BUNDLED_SOURCES, describe_model_name
from interp.viz.heatmaps import head_heatmap
from interp.viz.speech import correlation_by_layer, deletion_curves_figure, maps_over_spectrogram

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
Speed = Annotated[int, Field(ge=80, le=450)]
_AGG = r"^(all|last[1-9]\d*|L\d+|L\d+\.H\d+)$"


def _non_empty(value: tuple) -> tuple:
    # a validator, not min_length: pydantic adds a misleading "too short" after a bad item
    if not value:
        raise ValueError("must not be empty; give at least one value")
    return value


class SpeechModelConfig(_Section):
    name: StrictStr = Field("whisper-tiny.en", description="a speech model name: whisper-tiny.en")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("name")
    @classmethod
    def _speech_model(cls, name: str) -> str:
        speech = [n for n, (_, modality) in BUNDLED_SOURCES.items() if modality == "speech"]
        try:
            info = describe_model_name(name)
        except ModelLoadError as exc:
            raise ValueError(f"{exc}; speech models: {', '.join(speech)}") from None
        if info.modality != "speech":
            raise ValueError(f"{name!r} is not a speech-to-text model; allowed: {', '.join(speech)}")
        return name


class SpeechDataConfig(_Section):
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
        return _non_empty(value)

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        must = "exist" if info.data.get("source") == "files" else None
        return resolve_config_path(path, info, must=must, what="audio path")

    @model_validator(mode="after")
    def _fields_match_source(self) -> SpeechDataConfig:
        if self.source == "files" and self.path is None:
            raise _FieldError("path", "required when data.source is 'files'")
        only_for = {"espeak": ("path", "max_utterances"), "files": ("n_utterances", "voices", "speeds")}
        for name in only_for[self.source]:
            default = type(self).model_fields[name].default
            if getattr(self, name) != default:
                other = "files" if self.source == "espeak" else "espeak"
                raise _FieldError(name, f"only used when data.source is '{other}' (it is '{self.source}'); remove it")
        return self


class CrossAttentionConfig(_Section):
    last_layers: PositiveInt = Field(2, description="an integer >= 1: the 'last layers' aggregation")


class SpesConfig(_Section):
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
        return _non_empty(value)

    @model_validator(mode="after")
    def _random_fields(self) -> SpesConfig:
        if self.mode == "random" and self.n_masks < 2:
            raise _FieldError("n_masks", "random mode needs at least 2 masks")
        if self.mode == "random" and self.n_masks > self.max_forwards:
            raise _FieldError("n_masks", f"{self.n_masks} masks exceed max_forwards={self.max_forwards}")
        return self


class IntegratedGradientsConfig(_Section):
    enabled: StrictBool = True
    steps: PositiveInt = Field(8, description="an integer >= 1: interpolation steps per output token")
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"] = "gausslegendre"
    pooling: Literal["max", "mean"] = "max"
    max_utterances: PositiveInt | None = Field(
        2, description="null (all) or an integer >= 1: IG costs tokens x steps backward passes per utterance"
    )
    internal_batch_size: PositiveInt = 8


class ComparisonConfig(_Section):
    capture_top_fraction: Fraction = 0.2


class DeletionConfig(_Section):
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
        return _non_empty(value)

    @model_validator(mode="after")
    def _step_fits(self) -> DeletionConfig:
        if self.step > self.max_fraction:
            raise _FieldError("step", f"step {self.step} exceeds max_fraction {self.max_fraction}")
        return self


class SpeechAnalysesConfig(_Section):
    cross_attention: CrossAttentionConfig = CrossAttentionConfig()
    spes: SpesConfig = SpesConfig()
    integrated_gradients: IntegratedGradientsConfig = IntegratedGradientsConfig()
    comparison: ComparisonConfig = ComparisonConfig()
    deletion: DeletionConfig = DeletionConfig()


class SpeechOutputConfig(OutputConfig):
    example_utterances: NonNegativeInt = Field(2, description="an integer >= 0: utterances drawn as map figures")


class SpeechSaliencyConfig(_Section):
    """Cross-attention vs saliency on a speech-to-text model (see the module docstring)."""

    kind: Literal["speech_saliency"] = "speech_saliency"
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")] = Field(
        description="a name of letters, digits, '_' and '-' (used in the run directory name)"
    )
    description: StrictStr = ""
    seed: NonNegativeInt = 0
    model: SpeechModelConfig = SpeechModelConfig()
    data: SpeechDataConfig = SpeechDataConfig()
    analyses: SpeechAnalysesConfig = SpeechAnalysesConfig()
    output: SpeechOutputConfig = SpeechOutputConfig()

    @model_validator(mode="after")
    def _something_to_compare(self) -> SpeechSaliencyConfig:
        a = self.analyses
        if not (a.spes.enabled or a.integrated_gradients.enabled):
            raise _FieldError("analyses", "enable spes or integrated_gradients: cross-attention needs a saliency to compare with")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


register_experiment_kind("speech_saliency", SpeechSaliencyConfig)


# --- runner task ----------------------------------------------------------------------------


@dataclass
class _Prepared:
    dataset: SpeechDataset
    features: list[torch.Tensor]
    frames: list[tuple[int, int]]  # (mel frames, encoder frames) holding audio


@dataclass
class _State:
    """What the stages hand on: kept utterances, transcripts, maps, stage timings."""

    keep: list[int]
    transcripts: list[Transcript]
    cas: dict[int, CrossAttentionResult]
    sal: dict[str, dict[int, SaliencyResult]]
    timing: dict[str, float]


def _prepare(cfg: SpeechSaliencyConfig, model, log) -> _Prepared:
    if not isinstance(model, HookedSeq2SeqModel):
        raise ConfigError(f"{model.name!r} is not a speech encoder-decoder model", path="model.name")
    spec, a = model.spec, cfg.analyses
    if a.cross_attention.last_layers > spec.n_decoder_layers:
        raise ConfigError(f"must be <= {spec.n_decoder_layers} (the decoder's layers)",
                          path="analyses.cross_attention.last_layers")
    names = aggregation_sets(spec.n_decoder_layers, spec.n_heads, a.cross_attention.last_layers)
    allowed_last = {f"last{k}" for k in range(1, spec.n_decoder_layers + 1)}
    for agg in a.deletion.ca_aggregations:
        if agg not in names and agg not in allowed_last:
            raise ConfigError(f"{agg!r} names no layer/head of this model ({spec.n_decoder_layers} layers x "
                              f"{spec.n_heads} heads)", path="analyses.deletion.ca_aggregations")
    d = cfg.data
    if d.source == "espeak":
        ds = generate_speech(d.n_utterances, seed=cfg.seed, voices=d.voices, speeds=d.speeds)
    else:
        ds = load_speech_files(d.path)
        if d.max_utterances is not None:
            ds = SpeechDataset(ds.utterances[: d.max_utterances], ds.name, ds.source)
    feats = [model.features(u.audio) for u in ds]
    frames = [model.frames_of(len(u.audio)) for u in ds]
    s = a.spes
    if s.enabled:  # refuse a setting whose cost the user did not allow, before any work
        for u, (mel, _) in zip(ds, frames, strict=True):
            cost = spes_cost(mel, spec.n_mels, mode=s.mode, patch_frames=s.patch_frames, patch_mels=s.patch_mels,
                             n_masks=s.n_masks)
            if cost > s.max_forwards:
                raise ConfigError(
                    f"SPES occlusion of {u.id} ({u.duration:.1f} s) needs {cost} forwards, more than max_forwards="
                    f"{s.max_forwards}; use larger patches (patch_frames, patch_mels), mode 'random' with n_masks, "
                    "or raise max_forwards", path="analyses.spes.max_forwards")
    log(f"data: {len(ds)} utterances ({ds.name}), {sum(u.duration for u in ds):.1f} s of audio")
    return _Prepared(ds, feats, frames)


def _bar(desc: str, show: bool):
    bar = tqdm(total=0, desc=desc, disable=None if show else True, leave=False)

    def fn(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    return bar, fn


def _execute(cfg: SpeechSaliencyConfig, model, prep: _Prepared, out: RunOutcome, show: bool, log) -> None:
    ds = prep.dataset
    out.run.update_manifest(dataset={"name": ds.name, "n": len(ds), **ds.source})
    out.run.write_table("dataset", ds.to_frame())
    state = _transcribe_and_attend(model, prep, out)
    _saliency(cfg, model, prep, state, out, show)
    _compare(cfg, state, out)
    if cfg.analyses.deletion.enabled:
        _deletion(cfg, model, prep, state, out, show)
    _example_figures(cfg, prep, state, out)
    out.summary.append("timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in state.timing.items())
                       + f" (total {sum(state.timing.values()):.0f} s)")
    out.run.write_text("timing.json", json.dumps({k: round(v, 2) for k, v in state.timing.items()}, indent=2))


def _transcribe_and_attend(model, prep: _Prepared, out: RunOutcome) -> _State:
    """Greedy transcripts (the predictions being explained), then cross-attention over them."""
    ds, t0 = prep.dataset, time.perf_counter()
    transcripts = [model.transcribe(f)[0] for f in prep.features]
    timing = {"transcription": time.perf_counter() - t0}
    tdf = pd.DataFrame([{"utterance": u.id, "reference": u.text, "transcript": t.text, "n_tokens": len(t.token_ids),
                         "wer": wer(u.text, t.text), "duration_s": u.duration, "audio_frames": fr[1]}
                        for u, t, fr in zip(ds, transcripts, prep.frames, strict=True)])
    out.run.write_table("transcripts", tdf)
    keep = [i for i, t in enumerate(transcripts) if t.token_ids]
    if not keep:
        raise RuntimeError("the model produced an empty transcript for every utterance: nothing to explain")
    dropped = len(ds) - len(keep)
    out.summary.append(f"transcripts: {len(ds)} utterances, mean WER vs reference {tdf.wer.mean():.2f}"
                       + (f" ({dropped} with empty transcripts skipped)" if dropped else ""))
    out.sections.append(ReportSection("Transcripts", text="Greedy transcripts of Whisper; the analyses explain these.",
                                      table=tdf, table_max_rows=50))
    out.finished("transcripts")

    t0 = time.perf_counter()
    cas = {i: cross_attention_maps(model, prep.features[i], transcripts[i].token_ids, n_frames=prep.frames[i][1],
                                   utterance=ds[i].id) for i in keep}
    timing["cross_attention"] = time.perf_counter() - t0
    out.run.write_table("cross_attention", pd.concat([c.to_frame() for c in cas.values()], ignore_index=True))
    mass = pd.concat([c.mass_frame() for c in cas.values()], ignore_index=True)
    out.run.write_table("cross_attention_window_mass", mass)
    out.summary.append(f"cross-attention: {mass.window_mass.mean():.0%} of its weight falls on the frames that hold "
                       "audio (the rest on the silence padding of the 30 s window)")
    out.finished("cross_attention")
    return _State(keep, transcripts, cas, {}, timing)


def _saliency(cfg: SpeechSaliencyConfig, model, prep: _Prepared, st: _State, out: RunOutcome, show: bool) -> None:
    a, ds = cfg.analyses, prep.dataset
    if a.spes.enabled:
        s, t0, st.sal["spes"] = a.spes, time.perf_counter(), {}
        bar, prog = _bar("SPES occlusion", show)
        for i in st.keep:
            st.sal["spes"][i] = spes_saliency(
                model, prep.features[i], st.transcripts[i].token_ids, n_mel_frames=prep.frames[i][0], mode=s.mode,
                patch_frames=s.patch_frames, patch_mels=s.patch_mels, n_masks=s.n_masks, mask_prob=s.mask_prob,
                scales=s.scales, pooling=s.pooling, batch_size=s.batch_size, seed=cfg.seed, utterance=ds[i].id,
                progress=prog)
        bar.close()
        st.timing["spes"] = time.perf_counter() - t0
        out.run.write_table("spes", pd.concat([r.to_frame() for r in st.sal["spes"].values()], ignore_index=True))
        out.finished("spes")
    if a.integrated_gradients.enabled:
        g, t0, st.sal["integrated_gradients"] = a.integrated_gradients, time.perf_counter(), {}
        chosen = st.keep if g.max_utterances is None else st.keep[: g.max_utterances]
        bar, prog = _bar("integrated gradients", show)
        for i in chosen:
            st.sal["integrated_gradients"][i] = integrated_gradients_saliency(
                model, prep.features[i], st.transcripts[i].token_ids, n_mel_frames=prep.frames[i][0], steps=g.steps,
                method=g.method, pooling=g.pooling, internal_batch_size=g.internal_batch_size, utterance=ds[i].id,
                progress=prog)
        bar.close()
        st.timing["integrated_gradients"] = time.perf_counter() - t0
        frames = [r.to_frame().assign(max_convergence_delta=r.params["max_convergence_delta"])
                  for r in st.sal["integrated_gradients"].values()]
        out.run.write_table("integrated_gradients", pd.concat(frames, ignore_index=True))
        out.finished("integrated_gradients")


def _compare(cfg: SpeechSaliencyConfig, st: _State, out: RunOutcome) -> None:
    """Pearson r and capture share of every head/layer aggregation against every saliency."""
    a, run = cfg.analyses, out.run
    last = a.cross_attention.last_layers
    corr = CorrelationResult.concat([
        correlate(st.cas[i], res, last_layers=last, top_fraction=a.comparison.capture_top_fraction)
        for results in st.sal.values() for i, res in results.items()
    ])
    summ = corr.summary()
    run.write_table("correlation", corr.to_frame())
    run.write_table("correlation_summary", summ)
    fig_layers = correlation_by_layer(summ, title="Pearson r of cross-attention with saliency, per aggregation")
    run.write_figure("correlation_by_layer", fig_layers)
    fig_share = correlation_by_layer(summ, "capture_share", title="Share of saliency held by cross-attention's top frames")
    run.write_figure("capture_share_by_layer", fig_share)
    view = summ[summ.kind != "head"][["saliency", "aggregation", "pearson", "r_squared", "capture_share",
                                      "random_share", "n_tokens"]]
    out.sections.append(ReportSection(
        "Cross-attention vs saliency", figure=fig_layers, table=view, table_max_rows=40,
        text=(f"Pearson r between the cross-attention map and each saliency map of the same output token, over the "
              f"frames that hold audio, averaged over output tokens (n_tokens). capture_share: saliency in the top "
              f"{a.comparison.capture_top_fraction:.0%} frames by cross-attention / saliency in the top frames by "
              "saliency itself; random_share: the same for random frames.")))
    out.sections.append(ReportSection("Capture share per aggregation", figure=fig_share))
    for method in st.sal:
        heads = summ[(summ.saliency == method) & (summ.kind == "head")].astype({"layer": int, "head": int})
        fig = head_heatmap(heads, "pearson", title=f"Pearson r per cross-attention head vs {method}")
        run.write_figure(f"correlation_heads_{method}", fig)
        out.sections.append(ReportSection(fig.layout.title.text, figure=fig))
        out.summary.append(_corr_line(method, summ, last))
    out.finished("correlation")


def _deletion(cfg: SpeechSaliencyConfig, model, prep: _Prepared, st: _State, out: RunOutcome, show: bool) -> None:
    """WER while removing the top frames of each map, and of random rankings."""
    dl_cfg, ds, last, t0 = cfg.analyses.deletion, prep.dataset, cfg.analyses.cross_attention.last_layers, time.perf_counter()
    fractions = fractions_grid(dl_cfg.step, dl_cfg.max_fraction)
    gen = torch.Generator().manual_seed(cfg.seed)
    random_names = ["random"] if dl_cfg.n_random == 1 else [f"random{r}" for r in range(dl_cfg.n_random)]
    results = []
    bar, prog = _bar("deletion curves", show)
    for i in st.keep:
        ranks = {f"ca:{agg}": ranking(utterance_scores(st.cas[i].aggregate(agg, last))) for agg in dl_cfg.ca_aggregations}
        ranks |= {method: ranking(utterance_scores(res[i].maps)) for method, res in st.sal.items() if i in res}
        ranks |= {name: torch.randperm(prep.frames[i][1], generator=gen) for name in random_names}
        max_new = 2 * len(st.transcripts[i].token_ids) + 10  # a hallucination loop cannot run away
        res_i = deletion_curves(model, prep.features[i], n_mel_frames=prep.frames[i][0], rankings=ranks,
                                transcript=st.transcripts[i].text, reference=ds[i].text, fractions=fractions,
                                batch_size=dl_cfg.batch_size, max_new_tokens=max_new, utterance=ds[i].id,
                                progress=prog)
        results.append(DeletionResult(res_i.frame.replace({"map": dict.fromkeys(random_names, "random")})))
    bar.close()
    st.timing["deletion"] = time.perf_counter() - t0
    dl = DeletionResult.concat(results)
    curves, auc = dl.curves(), dl.auc()
    out.run.write_table("deletion", dl.to_frame())
    out.run.write_table("deletion_curves", curves)
    out.run.write_table("deletion_auc", auc)
    fig = deletion_curves_figure(curves, title="Deletion curves: WER vs the model's own transcript")
    out.run.write_figure("deletion_curves", fig)
    partial = "integrated_gradients" in st.sal and len(st.sal["integrated_gradients"]) < len(st.keep)
    out.summary.append("deletion AUC (mean WER while removing the top frames; higher = the map found what the "
                       "output needs): " + ", ".join(f"{r.map} {r.auc_wer_transcript:.3f}" for r in auc.itertuples())
                       + (" [integrated_gradients only on the utterances it explained]" if partial else ""))
    out.sections.append(ReportSection(
        "Deletion curves", figure=fig, table=auc,
        text=(f"Audio frames are removed (set to silence) in order of each map's token-averaged relevance, "
              f"{dl_cfg.step:.0%} at a time; WER against the unperturbed transcript, clipped at 1, averaged over "
              "utterances. integrated_gradients is evaluated only on the utterances it explained.")))
    out.finished("deletion")


def _example_figures(cfg: SpeechSaliencyConfig, prep: _Prepared, st: _State, out: RunOutcome) -> None:
    """Cross-attention and saliency side by side over the spectrogram, for the first utterances."""
    last, ds = cfg.analyses.cross_attention.last_layers, prep.dataset
    for i in st.keep[: cfg.output.example_utterances]:
        mel = prep.frames[i][0]
        maps = {f"cross-attention ({agg})": st.cas[i].aggregate(agg, last).numpy() for agg in ("all", f"last{last}")}
        maps |= {method: res[i].maps.numpy() for method, res in st.sal.items() if i in res}
        fig = maps_over_spectrogram(prep.features[i][0, :, :mel].cpu().numpy(), maps, st.cas[i].tokens,
                                    title=f"{ds[i].id}: {st.transcripts[i].text.strip()}")
        out.run.write_figure(f"maps_{ds[i].id}", fig)
        out.sections.append(ReportSection(f"Maps over the spectrogram: {ds[i].id}", figure=fig,
                                          text=f"reference: {ds[i].text}"))


def _corr_line(method: str, summ: pd.DataFrame, last: int) -> str:
    s = summ[summ.saliency == method].set_index("aggregation")
    layers, heads, all_ = s[s.kind == "layer"], s[s.kind == "head"], s.loc["all"]
    best_l = layers.pearson.idxmax() if layers.pearson.notna().any() else None
    best_h = heads.pearson.idxmax() if heads.pearson.notna().any() else None
    return (f"cross-attention vs {method}: Pearson r all layers {all_.pearson:.2f} (r^2 {all_.r_squared:.2f}), "
            f"last {last} layers {s.loc[f'last{last}'].pearson:.2f}, best layer {best_l} {_get(layers, best_l):.2f}, "
            f"best head {best_h} {_get(heads, best_h):.2f}, mean over heads {heads.pearson.mean():.2f}; "
            f"cross-attention's top frames (all layers) hold {all_.capture_share:.0%} of the saliency the most "
            f"salient frames hold (random frames {all_.random_share:.0%}); {int(all_.n_tokens)} tokens")


def _get(df: pd.DataFrame, key: str | None) -> float:
    return float(df.pearson.loc[key]) if key is not None and key in df.index else math.nan


register_task("speech_saliency", Task(prepare=_prepare, execute=_execute))
