"""Two models side by side, by relative depth: the same per-head scores of both, from the atlas.

Models differ in depth (SmolLM2-135M: 30 layers x 9 heads; Gemma 3 270M: 18 layers x 4 heads),
so heads are placed by their *relative depth* ``layer / (n_layers - 1)`` (0 = the first layer,
1 = the last). For every score both models have in the run store (an atlas column, see
`interp.io.atlas`), a `CompareResult` holds:

- `frame`: one row per (score, model, head) with a value: score, model, layer, head,
  relative_depth, value, rank (1 = the largest |value| of that model; ties in layer, head
  order, as `Atlas.top_k`);
- `summary`: one row per (score, model): heads, the top-k heads with their relative depths,
  the mean relative depth of the top-k, and, for scores with a threshold rule (retrieval
  scores: value > 0.1, the retrieval-head rule of Wu et al. 2024), how many heads pass it and
  their share;
- `profile`: one row per (score, model, relative-depth bin of width 0.1): mean value, mean
  |value|, heads in the bin (bin i holds 0.1 i <= depth < 0.1 (i + 1); the last bin also
  depth 1).

`n_layers` is read from the atlas: the deepest layer any score of the model has, plus one
(pass `n_layers={"model": 30}` where the runs cover fewer layers than the model has).

    result = compare_models("runs", "smollm2-135m", "gemma3-270m")
    result.summary                     # score, model, n_layers, n_heads, k, top_k, ...
    result.heads("retrieval.niah")     # model, layer, head, relative_depth, value, rank
    print("\\n".join(result.lines()))  # what `interp compare` prints
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.core.errors import InterpError
from interp.io.atlas import Atlas, build_atlas
from interp.io.runstore import RunStore

__all__ = [
    "CompareError",
    "CompareResult",
    "N_BINS",
    "SCORE_THRESHOLDS",
    "compare_atlas",
    "compare_models",
    "score_threshold",
]

# Score-name prefix -> the threshold a head's value must exceed to count. "retrieval." is the
# retrieval-head rule (`interp.analyses.retrieval.RETRIEVAL_THRESHOLD`, kept equal by a test;
# not imported here so that `interp compare` does not load torch).
SCORE_THRESHOLDS: dict[str, float] = {"retrieval.": 0.1}
N_BINS = 10  # relative-depth bins of width 0.1
FRAME_COLUMNS = ["score", "model", "layer", "head", "relative_depth", "value", "rank"]
SUMMARY_COLUMNS = [
    "score", "model", "n_layers", "n_heads", "k", "top_k", "top_k_mean_depth", "threshold",
    "n_above", "share_above", "run_id",
]
PROFILE_COLUMNS = ["score", "model", "bin", "depth_lo", "depth_hi", "mean", "mean_abs", "n_heads"]


class CompareError(InterpError):
    """Two models cannot be compared: one has no scores in the run store, they share no score,
    or the score asked for is missing. The message names what is available."""


def score_threshold(score: str, thresholds: Mapping[str, float] | None = None) -> float | None:
    """The threshold rule of `score` (by name prefix; the longest matching prefix wins), or None."""
    table = SCORE_THRESHOLDS if thresholds is None else thresholds
    hits = [p for p in table if score.startswith(p)]
    return float(table[max(hits, key=len)]) if hits else None


def _head(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


@dataclass(frozen=True)
class CompareResult:
    """The scores two models share, head by head on a relative-depth axis (see the module doc)."""

    model_a: str
    model_b: str
    scores: list[str]  # the scores compared (present for both models)
    frame: pd.DataFrame  # FRAME_COLUMNS
    summary: pd.DataFrame  # SUMMARY_COLUMNS
    profile: pd.DataFrame  # PROFILE_COLUMNS
    n_layers: dict[str, int]
    n_heads_per_layer: dict[str, int]
    only_a: list[str] = field(default_factory=list)  # scores only model_a has
    only_b: list[str] = field(default_factory=list)
    k: int = 10
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return [self.model_a, self.model_b]

    def _check(self, score: str) -> None:
        if score not in self.scores:
            raise CompareError(f"score {score!r} is not compared; compared: {', '.join(self.scores)}")

    def heads(self, score: str, model: str | None = None) -> pd.DataFrame:
        """One score's heads (both models, or `model`): model, layer, head, relative_depth,
        value, rank."""
        self._check(score)
        df = self.frame[self.frame["score"] == score]
        if model is not None:
            df = df[df["model"] == model]
        return df.drop(columns="score").reset_index(drop=True)

    def top(self, score: str, model: str, k: int | None = None) -> pd.DataFrame:
        """The top-k heads (by |value|) of one model for one score, rank order."""
        df = self.heads(score, model)
        return df[df["rank"] <= (self.k if k is None else k)].sort_values("rank").reset_index(drop=True)

    def depth_profile(self, score: str) -> pd.DataFrame:
        self._check(score)
        return self.profile[self.profile["score"] == score].drop(columns="score").reset_index(drop=True)

    def side_by_side(self, score: str) -> pd.DataFrame:
        """One score's summary with one column per model and one row per quantity, as text (for
        display)."""
        self._check(score)
        s = self.summary[self.summary["score"] == score].set_index("model")
        rows: dict[str, list[object]] = {
            "layers x heads": [f"{self.n_layers[m]} x {self.n_heads_per_layer[m]}" for m in self.models],
            "heads with a value": [int(s.loc[m, "n_heads"]) for m in self.models],
        }
        threshold = s["threshold"].iloc[0]
        if pd.notna(threshold):
            rows[f"share > {threshold:g}"] = [
                f"{s.loc[m, 'share_above']:.1%} ({int(s.loc[m, 'n_above'])})" for m in self.models
            ]
        rows[f"top-{self.k} mean relative depth"] = [f"{s.loc[m, 'top_k_mean_depth']:.2f}" for m in self.models]
        for i in range(self.k):
            cells = []
            for m in self.models:
                top = self.top(score, m)
                cells.append(
                    f"{_head(top['layer'].iloc[i], top['head'].iloc[i])} {top['value'].iloc[i]:+.3g} "
                    f"@ {top['relative_depth'].iloc[i]:.2f}" if i < len(top) else ""
                )
            if not any(cells):
                break
            rows[f"top {i + 1}"] = cells
        rows["run"] = [s.loc[m, "run_id"] for m in self.models]
        return pd.DataFrame.from_dict(
            {label: [str(c) for c in cells] for label, cells in rows.items()}, orient="index", columns=self.models)

    def lines(self) -> list[str]:
        """What `interp compare` prints: per score, the two models side by side."""
        a, b = self.model_a, self.model_b
        out = [
            f"{a} ({self.n_layers[a]} layers x {self.n_heads_per_layer[a]} heads) vs "
            f"{b} ({self.n_layers[b]} layers x {self.n_heads_per_layer[b]} heads); "
            "relative depth = layer / (n_layers - 1)",
            f"compared: {len(self.scores)} score(s)"
            + (f"; only {a}: {', '.join(self.only_a)}" if self.only_a else "")
            + (f"; only {b}: {', '.join(self.only_b)}" if self.only_b else ""),
        ]
        for score in self.scores:
            table = self.side_by_side(score)
            label_w = max(len(str(i)) for i in table.index) + 2
            col_w = max(28, *(len(str(v)) + 2 for v in table.to_numpy().ravel()), len(a) + 2)
            out += ["", f"{score}", f"  {'':<{label_w}}{a:<{col_w}}{b}"]
            for label, row in table.iterrows():
                out.append(f"  {label:<{label_w}}{str(row[a]):<{col_w}}{row[b]}".rstrip())
            prof = self.depth_profile(score)
            out.append("  depth profile (mean value per relative-depth bin)")
            for lo in sorted(prof["depth_lo"].unique()):
                cells = []
                for m in self.models:
                    p = prof[(prof["model"] == m) & (prof["depth_lo"] == lo)].iloc[0]
                    cells.append("-" if p["n_heads"] == 0 else f"{p['mean']:+.3g} ({int(p['n_heads'])} heads)")
                hi = lo + 1 / N_BINS
                label = f"  [{lo:.1f}, {hi:.1f}{']' if hi >= 1 - 1e-9 else ')'}"
                out.append(f"  {label:<{label_w}}{cells[0]:<{col_w}}{cells[1]}")
        return out


def _model_frame(atlas: Atlas, model: str, score: str, n_layers: int) -> pd.DataFrame:
    table = atlas.for_model(model).table
    df = table[["layer", "head", score]].dropna(subset=[score]).rename(columns={score: "value"})
    df = df.sort_values(["layer", "head"], kind="stable").reset_index(drop=True)
    depth = df["layer"].astype(float) / (n_layers - 1) if n_layers > 1 else pd.Series(0.0, index=df.index)
    # the order of Atlas.top_k: largest |value| first, ties in (layer, head) order
    order = df["value"].abs().sort_values(ascending=False, kind="stable").index
    rank = pd.Series(np.arange(1, len(df) + 1), index=order).reindex(df.index)
    return pd.DataFrame({
        "score": score, "model": model, "layer": df["layer"].astype("int64"), "head": df["head"].astype("int64"),
        "relative_depth": depth.astype(float), "value": df["value"].astype(float), "rank": rank.astype("int64"),
    })


def _profile(df: pd.DataFrame, score: str, model: str, n_layers: int) -> pd.DataFrame:
    # integer arithmetic: layer * N_BINS // (n_layers - 1) is exact, where floor(depth / 0.1) is not
    bins = (df["layer"] * N_BINS // max(1, n_layers - 1)).clip(upper=N_BINS - 1)
    grouped = df.assign(bin=bins, abs=df["value"].abs()).groupby("bin")
    stats = pd.DataFrame({"mean": grouped["value"].mean(), "mean_abs": grouped["abs"].mean(),
                          "n_heads": grouped.size()}).reindex(range(N_BINS))
    return pd.DataFrame({
        "score": score, "model": model, "bin": np.arange(N_BINS),
        "depth_lo": np.arange(N_BINS) / N_BINS, "depth_hi": np.arange(1, N_BINS + 1) / N_BINS,
        "mean": stats["mean"].to_numpy(dtype=float), "mean_abs": stats["mean_abs"].to_numpy(dtype=float),
        "n_heads": stats["n_heads"].fillna(0).astype("int64").to_numpy(),
    })


def _no_scores(model: str, atlas: Atlas, where: str) -> CompareError:
    others = [m for m in atlas.models if m != model]
    known = ", ".join(others) if others else "none"
    return CompareError(f"no complete run of model {model!r} holds per-head scores in {where}; "
                        f"models with scores: {known}")


def _check_models(atlas: Atlas, model_a: str, model_b: str, k: int, where: str) -> None:
    if model_a == model_b:
        raise CompareError(f"compare needs two different models; got {model_a!r} twice")
    if k < 1:
        raise CompareError(f"k must be >= 1, got {k}")
    for m in (model_a, model_b):
        if m not in atlas.models:
            raise _no_scores(m, atlas, where)


def _scores_to_compare(have: dict[str, list[str]], model_a: str, model_b: str, score: str | None) -> list[str]:
    """The scores both models have (or just `score`, which both must have)."""
    shared = [s for s in have[model_a] if s in set(have[model_b])]
    listing = f"{model_a} has: {', '.join(have[model_a])}; {model_b} has: {', '.join(have[model_b])}"
    if score is not None:
        if score not in shared:
            raise CompareError(
                f"score {score!r} is not present for both models; shared: {', '.join(shared) or 'none'}; "
                + listing
            )
        return [score]
    if not shared:
        raise CompareError(f"{model_a} and {model_b} share no score; " + listing)
    return shared


def _model_depths(atlas: Atlas, models: tuple[str, str], n_layers: Mapping[str, int] | None,
                  notes: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(layers, heads per layer) of each model: `n_layers` when given, else the deepest scored layer."""
    layers: dict[str, int] = {}
    heads_per_layer: dict[str, int] = {}
    for m in models:
        table = atlas.for_model(m).table
        deepest = int(table["layer"].max()) + 1
        given = (n_layers or {}).get(m)
        if given is not None and int(given) < deepest:
            raise CompareError(f"n_layers for {m} is {given}, but its runs have scores at layer {deepest - 1}")
        layers[m] = int(given) if given is not None else deepest
        heads_per_layer[m] = int(table["head"].max()) + 1
        if layers[m] == 1:
            notes.append(f"{m} has one layer: every head is at relative depth 0")
    return layers, heads_per_layer


def _summary_row(atlas: Atlas, df: pd.DataFrame, s: str, m: str, n_layers: int, k: int,
                 threshold: float | None) -> dict[str, Any]:
    top = df[df["rank"] <= k].sort_values("rank")
    above = int((df["value"] > threshold).sum()) if threshold is not None else None
    prov = atlas.provenance[(atlas.provenance["model"] == m) & (atlas.provenance["score"] == s)]
    return {
        "score": s, "model": m, "n_layers": n_layers, "n_heads": len(df), "k": min(k, len(df)),
        "top_k": ", ".join(f"{_head(r.layer, r.head)}@{r.relative_depth:.2f}" for r in top.itertuples()),
        "top_k_mean_depth": float(top["relative_depth"].mean()) if len(top) else float("nan"),
        "threshold": threshold, "n_above": above,
        "share_above": above / len(df) if above is not None and len(df) else None,
        "run_id": prov["run_id"].iloc[0] if not prov.empty else None,
    }


def compare_atlas(
    atlas: Atlas,
    model_a: str,
    model_b: str,
    score: str | None = None,
    *,
    k: int = 10,
    thresholds: Mapping[str, float] | None = None,
    n_layers: Mapping[str, int] | None = None,
    where: str = "the atlas",
) -> CompareResult:
    """Compare two models of one atlas (e.g. the app's cached one); see `compare_models`."""
    _check_models(atlas, model_a, model_b, k, where)
    have = {m: atlas.scores(m) for m in (model_a, model_b)}
    scores = _scores_to_compare(have, model_a, model_b, score)
    shared = [s for s in have[model_a] if s in set(have[model_b])]
    notes = list(atlas.notes)
    layers, heads_per_layer = _model_depths(atlas, (model_a, model_b), n_layers, notes)
    frames, summary, profiles = [], [], []
    for s in scores:
        threshold = score_threshold(s, thresholds)
        for m in (model_a, model_b):
            df = _model_frame(atlas, m, s, layers[m])
            frames.append(df)
            if df["value"].nunique() == 1:
                notes.append(f"{m}: every head has {s} = {df['value'].iloc[0]:g}; its top-k is (layer, head) "
                             "order, not a ranking")
            profiles.append(_profile(df, s, m, layers[m]))
            summary.append(_summary_row(atlas, df, s, m, layers[m], k, threshold))
    return CompareResult(
        model_a=model_a, model_b=model_b, scores=scores,
        frame=pd.concat(frames, ignore_index=True)[FRAME_COLUMNS],
        summary=pd.DataFrame(summary, columns=SUMMARY_COLUMNS).astype(
            {"threshold": "float64", "n_above": "Int64", "share_above": "float64"}),
        profile=pd.concat(profiles, ignore_index=True)[PROFILE_COLUMNS],
        n_layers=layers, n_heads_per_layer=heads_per_layer,
        only_a=[s for s in have[model_a] if s not in shared],
        only_b=[s for s in have[model_b] if s not in shared],
        k=k, notes=notes,
    )


def compare_models(
    runs_dir: str | Path | RunStore,
    model_a: str,
    model_b: str,
    score: str | None = None,
    *,
    k: int = 10,
    thresholds: Mapping[str, float] | None = None,
    n_layers: Mapping[str, int] | None = None,
    grid: str | None = None,
) -> CompareResult:
    """Every score both models have in the run store (or just `score`), head by head on a
    relative-depth axis; `grid`: only the runs of that grid (`interp.io.grid`). Raises
    `CompareError` when a model has no complete run with per-head scores, when they share no
    score, or when `score` is not present for both."""
    if model_a == model_b:
        raise CompareError(f"compare needs two different models; got {model_a!r} twice")
    store = runs_dir if isinstance(runs_dir, RunStore) else RunStore(runs_dir)
    atlases = {m: build_atlas(store, model=m, grid=grid) for m in (model_a, model_b)}
    where = str(store.root) + (f" (grid {grid})" if grid else "")
    for m, atlas in atlases.items():
        if m not in atlas.models:
            raise _no_scores(m, build_atlas(store, grid=grid), where)
    a, b = atlases[model_a], atlases[model_b]
    merged = Atlas(
        pd.concat([a.table, b.table], ignore_index=True),
        pd.concat([a.provenance, b.provenance], ignore_index=True),
        list(dict.fromkeys([*a.notes, *b.notes])),
    )
    return compare_atlas(merged, model_a, model_b, score, k=k, thresholds=thresholds, n_layers=n_layers,
                         where=where)
