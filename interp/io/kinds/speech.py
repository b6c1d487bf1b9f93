"""Experiment kind ``speech_saliency``: does cross-attention explain a speech model's output?

Reproduces the analysis of Papi et al. 2025, "Cross-Attention is Half Explanation in
Speech-to-Text Models" (arXiv 2509.18010) on the bundled Whisper tiny.en: for each spoken
sentence, transcribe it, read the decoder's cross-attention while teacher-forcing that
transcript, compute SPES-style occlusion saliency and integrated gradients on the log-mel input,
then correlate them per output token and per head/layer aggregation, measure what share of
saliency cross-attention's top frames capture, and run deletion curves (WER after removing the
top frames of each map, against a random ranking). Writes tidy parquet tables, plotly figures
and a report; prints a summary with the numbers and the time each stage took.

The config (YAML -> `SpeechSaliencyConfig` in `speech_config.py`, frozen, unknown keys rejected):

    kind: speech_saliency
    name: speech_saliency
    model: {name: whisper-tiny.en}
    data: {source: espeak, n_utterances: 6}          # or {source: files, path: clips.yaml}
    analyses: {spes: {patch_frames: 10, patch_mels: 40}, integrated_gradients: {steps: 8}}

Registered on import (`interp.io.registry.load_kinds` imports every module of this package).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from interp.analyses.cross_attention import (
    aggregation_sets,
    cross_attention_maps,
)
from interp.analyses.saliency import (
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
from interp.core.capabilities import AudioInput, has
from interp.core.errors import ConfigError
from interp.data.speech import SpeechDataset, generate_speech, load_speech_files
from interp.io.kinds.speech_config import SpeechSaliencyConfig
from interp.io.limits import attribute
from interp.io.registry import register_kind
from interp.io.report import ReportSection
from interp.io.step import StepContext, StepResult
from interp.viz.heatmaps import head_heatmap
from interp.viz.speech import correlation_by_layer, deletion_curves_figure, maps_over_spectrogram

# --- steps ----------------------------------------------------------------------------------


@dataclass
class _Prepared:
    dataset: SpeechDataset
    features: list[torch.Tensor]
    frames: list[tuple[int, int]]  # (mel frames, encoder frames) holding audio


def prepare(cfg: SpeechSaliencyConfig, model, log, *, progress=None) -> _Prepared:
    if not has(model, AudioInput):
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
        ds = generate_speech(d.n_utterances, seed=cfg.seed, voices=d.voices, speeds=d.speeds,
                             progress=progress("espeak-ng utterances") if progress else None)
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


def estimate(cfg: SpeechSaliencyConfig, model, data: _Prepared | None) -> dict[str, int]:
    """Forward passes per field to lower, per utterance: the transcript and the cross-attention
    read (one decoder token at least each), SPES (one per patch, or per random mask), integrated
    gradients (steps per output token; one token at least) on the first utterances, and a
    transcription per deletion fraction and ranking. Each cost goes to the utterance count or to
    the setting, whichever factor is larger. Before the audio exists, occlusion counts one patch."""
    d, a = cfg.data, cfg.analyses
    data_field = "data.n_utterances" if d.source == "espeak" else "data.max_utterances"
    n = len(data.dataset) if data is not None else (d.n_utterances if d.source == "espeak" else d.max_utterances or 1)
    costs = {data_field: 2 * n}
    s = a.spes
    if s.enabled:
        mels = {m for m, _ in data.frames} if data is not None else {1}  # distinct lengths: cheap for any n
        n_mels = model.spec.n_mels if model is not None else 1
        per = max((spes_cost(m, n_mels, mode=s.mode, patch_frames=s.patch_frames, patch_mels=s.patch_mels,
                             n_masks=s.n_masks) for m in mels), default=0)
        setting = "analyses.spes.n_masks" if s.mode == "random" else "analyses.spes.patch_frames"
        attribute(costs, n, per, data_field, setting)
    ig = a.integrated_gradients
    if ig.enabled:
        attribute(costs, min(n, ig.max_utterances or n), ig.steps, data_field, "analyses.integrated_gradients.steps")
    dl = a.deletion
    if dl.enabled:
        rankings = len(dl.ca_aggregations) + s.enabled + ig.enabled + dl.n_random
        per = (int(round(dl.max_fraction / dl.step)) + 1) * rankings  # len(fractions_grid(...)), without the list
        attribute(costs, n, per, data_field, "analyses.deletion.step")
    return costs


def dataset_step(ctx: StepContext) -> StepResult:
    ds = ctx.data.dataset
    ctx.state.update(timing={}, sal={})
    return StepResult(tables={"dataset": ds.to_frame()},
                      manifest={"dataset": {"name": ds.name, "n": len(ds), **ds.source}})


def transcripts_step(ctx: StepContext) -> StepResult:
    """Greedy transcripts (the predictions being explained)."""
    prep, t0 = ctx.data, time.perf_counter()
    ds = prep.dataset
    transcripts = ctx.state["transcripts"] = [ctx.model.transcribe(f)[0] for f in prep.features]
    ctx.state["timing"]["transcription"] = time.perf_counter() - t0
    tdf = pd.DataFrame([{"utterance": u.id, "reference": u.text, "transcript": t.text, "n_tokens": len(t.token_ids),
                         "wer": wer(u.text, t.text), "duration_s": u.duration, "audio_frames": fr[1]}
                        for u, t, fr in zip(ds, transcripts, prep.frames, strict=True)])
    keep = ctx.state["keep"] = [i for i, t in enumerate(transcripts) if t.token_ids]
    result = StepResult("transcripts", tables={"transcripts": tdf})
    dropped = len(ds) - len(keep)
    result.summary.append(f"transcripts: {len(ds)} utterances, mean WER vs reference {tdf.wer.mean():.2f}"
                          + (f" ({dropped} with empty transcripts skipped)" if dropped else ""))
    result.sections.append(ReportSection("Transcripts", text="Greedy transcripts of Whisper; the analyses explain "
                                         "these.", table=tdf, table_max_rows=50))
    return result


def cross_attention_step(ctx: StepContext) -> StepResult:
    prep, keep, tr = ctx.data, ctx.state["keep"], ctx.state["transcripts"]
    if not keep:
        raise RuntimeError("the model produced an empty transcript for every utterance: nothing to explain")
    t0 = time.perf_counter()
    cas = ctx.state["cas"] = {i: cross_attention_maps(ctx.model, prep.features[i], tr[i].token_ids,
                                                      n_frames=prep.frames[i][1], utterance=prep.dataset[i].id)
                              for i in keep}
    ctx.state["timing"]["cross_attention"] = time.perf_counter() - t0
    mass = pd.concat([c.mass_frame() for c in cas.values()], ignore_index=True)
    return StepResult("cross_attention", tables={
        "cross_attention": pd.concat([c.to_frame() for c in cas.values()], ignore_index=True),
        "cross_attention_window_mass": mass}, summary=[
        f"cross-attention: {mass.window_mass.mean():.0%} of its weight falls on the frames that hold audio (the rest "
        "on the silence padding of the 30 s window)"])


def spes_step(ctx: StepContext) -> StepResult | None:
    s, prep, tr = ctx.cfg.analyses.spes, ctx.data, ctx.state["transcripts"]
    if not s.enabled:
        return None
    t0, maps, prog = time.perf_counter(), {}, ctx.progress("SPES occlusion")
    for i in ctx.state["keep"]:
        maps[i] = spes_saliency(
            ctx.model, prep.features[i], tr[i].token_ids, n_mel_frames=prep.frames[i][0], mode=s.mode,
            patch_frames=s.patch_frames, patch_mels=s.patch_mels, n_masks=s.n_masks, mask_prob=s.mask_prob,
            scales=s.scales, pooling=s.pooling, batch_size=s.batch_size, seed=ctx.cfg.seed,
            utterance=prep.dataset[i].id, progress=prog)
    ctx.state["sal"]["spes"] = maps
    ctx.state["timing"]["spes"] = time.perf_counter() - t0
    return StepResult("spes", tables={"spes": pd.concat([r.to_frame() for r in maps.values()], ignore_index=True)})


def integrated_gradients_step(ctx: StepContext) -> StepResult | None:
    g, prep, tr, keep = ctx.cfg.analyses.integrated_gradients, ctx.data, ctx.state["transcripts"], ctx.state["keep"]
    if not g.enabled:
        return None
    t0, maps, prog = time.perf_counter(), {}, ctx.progress("integrated gradients")
    for i in keep if g.max_utterances is None else keep[: g.max_utterances]:
        maps[i] = integrated_gradients_saliency(
            ctx.model, prep.features[i], tr[i].token_ids, n_mel_frames=prep.frames[i][0], steps=g.steps,
            method=g.method, pooling=g.pooling, internal_batch_size=g.internal_batch_size,
            utterance=prep.dataset[i].id, progress=prog)
    ctx.state["sal"]["integrated_gradients"] = maps
    ctx.state["timing"]["integrated_gradients"] = time.perf_counter() - t0
    frames = [r.to_frame().assign(max_convergence_delta=r.params["max_convergence_delta"]) for r in maps.values()]
    return StepResult("integrated_gradients", tables={"integrated_gradients": pd.concat(frames, ignore_index=True)})


def correlation_step(ctx: StepContext) -> StepResult:
    """Pearson r and capture share of every head/layer aggregation against every saliency."""
    a, st = ctx.cfg.analyses, ctx.state
    last = a.cross_attention.last_layers
    corr = CorrelationResult.concat([
        correlate(st["cas"][i], res, last_layers=last, top_fraction=a.comparison.capture_top_fraction)
        for results in st["sal"].values() for i, res in results.items()
    ])
    summ = corr.summary()
    out = StepResult("correlation", tables={"correlation": corr.to_frame(), "correlation_summary": summ})
    fig_layers = correlation_by_layer(summ, title="Pearson r of cross-attention with saliency, per aggregation")
    fig_share = correlation_by_layer(summ, "capture_share",
                                     title="Share of saliency held by cross-attention's top frames")
    out.figures.update(correlation_by_layer=fig_layers, capture_share_by_layer=fig_share)
    view = summ[summ.kind != "head"][["saliency", "aggregation", "pearson", "r_squared", "capture_share",
                                      "random_share", "n_tokens"]]
    out.sections.append(ReportSection(
        "Cross-attention vs saliency", figure=fig_layers, table=view, table_max_rows=40,
        text=(f"Pearson r between the cross-attention map and each saliency map of the same output token, over the "
              f"frames that hold audio, averaged over output tokens (n_tokens). capture_share: saliency in the top "
              f"{a.comparison.capture_top_fraction:.0%} frames by cross-attention / saliency in the top frames by "
              "saliency itself; random_share: the same for random frames.")))
    out.sections.append(ReportSection("Capture share per aggregation", figure=fig_share))
    for method in st["sal"]:
        heads = summ[(summ.saliency == method) & (summ.kind == "head")].astype({"layer": int, "head": int})
        fig = out.figures[f"correlation_heads_{method}"] = head_heatmap(
            heads, "pearson", title=f"Pearson r per cross-attention head vs {method}")
        out.sections.append(ReportSection(fig.layout.title.text, figure=fig))
        out.summary.append(_corr_line(method, summ, last))
    return out


def _rankings(ctx: StepContext, i: int, random_names: list[str], gen: torch.Generator) -> dict:
    dl_cfg, st = ctx.cfg.analyses.deletion, ctx.state
    last = ctx.cfg.analyses.cross_attention.last_layers
    ranks = {f"ca:{agg}": ranking(utterance_scores(st["cas"][i].aggregate(agg, last)))
             for agg in dl_cfg.ca_aggregations}
    ranks |= {method: ranking(utterance_scores(res[i].maps)) for method, res in st["sal"].items() if i in res}
    return ranks | {name: torch.randperm(ctx.data.frames[i][1], generator=gen) for name in random_names}


def deletion_step(ctx: StepContext) -> StepResult | None:
    """WER while removing the top frames of each map, and of random rankings."""
    dl_cfg, prep, st, t0 = ctx.cfg.analyses.deletion, ctx.data, ctx.state, time.perf_counter()
    if not dl_cfg.enabled:
        return None
    ds, fractions = prep.dataset, fractions_grid(dl_cfg.step, dl_cfg.max_fraction)
    gen = torch.Generator().manual_seed(ctx.cfg.seed)
    random_names = ["random"] if dl_cfg.n_random == 1 else [f"random{r}" for r in range(dl_cfg.n_random)]
    results, prog = [], ctx.progress("deletion curves")
    for i in st["keep"]:
        ranks = _rankings(ctx, i, random_names, gen)
        max_new = 2 * len(st["transcripts"][i].token_ids) + 10  # a hallucination loop cannot run away
        res_i = deletion_curves(ctx.model, prep.features[i], n_mel_frames=prep.frames[i][0], rankings=ranks,
                                transcript=st["transcripts"][i].text, reference=ds[i].text, fractions=fractions,
                                batch_size=dl_cfg.batch_size, max_new_tokens=max_new, utterance=ds[i].id,
                                progress=prog)
        results.append(DeletionResult(res_i.frame.replace({"map": dict.fromkeys(random_names, "random")})))
    st["timing"]["deletion"] = time.perf_counter() - t0
    dl = DeletionResult.concat(results)
    curves, auc = dl.curves(), dl.auc()
    fig = deletion_curves_figure(curves, title="Deletion curves: WER vs the model's own transcript")
    partial = "integrated_gradients" in st["sal"] and len(st["sal"]["integrated_gradients"]) < len(st["keep"])
    return StepResult("deletion", tables={"deletion": dl.to_frame(), "deletion_curves": curves, "deletion_auc": auc},
                      figures={"deletion_curves": fig}, summary=[
        "deletion AUC (mean WER while removing the top frames; higher = the map found what the output needs): "
        + ", ".join(f"{r.map} {r.auc_wer_transcript:.3f}" for r in auc.itertuples())
        + (" [integrated_gradients only on the utterances it explained]" if partial else "")], sections=[ReportSection(
        "Deletion curves", figure=fig, table=auc,
        text=(f"Audio frames are removed (set to silence) in order of each map's token-averaged relevance, "
              f"{dl_cfg.step:.0%} at a time; WER against the unperturbed transcript, clipped at 1, averaged over "
              "utterances. integrated_gradients is evaluated only on the utterances it explained."))])


def examples_step(ctx: StepContext) -> StepResult:
    """Cross-attention and saliency side by side over the spectrogram, for the first utterances;
    then the time each stage took."""
    cfg, prep, st = ctx.cfg, ctx.data, ctx.state
    last, ds, out = cfg.analyses.cross_attention.last_layers, prep.dataset, StepResult()
    for i in st["keep"][: cfg.output.example_utterances]:
        mel = prep.frames[i][0]
        maps = {f"cross-attention ({agg})": st["cas"][i].aggregate(agg, last).numpy() for agg in ("all", f"last{last}")}
        maps |= {method: res[i].maps.numpy() for method, res in st["sal"].items() if i in res}
        fig = out.figures[f"maps_{ds[i].id}"] = maps_over_spectrogram(
            prep.features[i][0, :, :mel].cpu().numpy(), maps, st["cas"][i].tokens,
            title=f"{ds[i].id}: {st['transcripts'][i].text.strip()}")
        out.sections.append(ReportSection(f"Maps over the spectrogram: {ds[i].id}", figure=fig,
                                          text=f"reference: {ds[i].text}"))
    timing = st["timing"]
    out.summary.append("timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
                       + f" (total {sum(timing.values()):.0f} s)")
    out.texts["timing.json"] = json.dumps({k: round(v, 2) for k, v in timing.items()}, indent=2)
    return out


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


register_kind("speech_saliency", SpeechSaliencyConfig, dataset_step, transcripts_step, cross_attention_step, spes_step,
              integrated_gradients_step, correlation_step, deletion_step, examples_step, prepare=prepare,
              estimate=estimate)
