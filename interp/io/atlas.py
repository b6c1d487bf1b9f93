"""The head atlas: every per-head score the run store holds, one row per (model, layer, head).

Each complete run contributes the per-head scores it wrote:

- `head_patching` tables -> ``patching.<task>.<direction>.<metric>`` (the normalised effect,
  1 = the head alone restores clean behaviour);
- `dla` tables (rows of kind "head") -> ``dla.<task>`` (mean direct logit attribution);
- `head_scores` tables (columns layer, head, score, value; written by head-score analyses)
  -> the names in their `score` column.

`<task>` is the manifest's `task` if set (live runs: "live"), else "ioi" for the IOI generator,
else the dataset's name (a JSONL file's stem). When several runs of one model hold the same
score, the newest wins; `provenance` says which run each column came from (and how many runs
had it). Runs that are not complete, of another format version, or unreadable are skipped and
listed in `notes`, never raised.

    atlas = build_atlas(RunStore("runs"), model="smollm2-135m")
    atlas.table                     # model, layer, head, patching.ioi.denoising.logit_diff, dla.ioi
    atlas.correlations()            # Spearman between score columns
    atlas.top_k_overlap(10)         # fraction of shared top-10 heads (by |value|)
    atlas.head_scores(9, 6)         # one head's scores, ranks and percentiles
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from interp.core.errors import InterpError
from interp.io.atlas_runs import (
    HEAD_SCORES_TABLE,
    HeadDLA,
    head_dla,
    run_head_scores,
    run_problems,
    task_name,
)
from interp.io.runstore import FORMAT_VERSION, Run, RunStore, RunStoreError, manifest_problems

__all__ = [
    "Atlas",
    "HEAD_SCORES_TABLE",
    "build_atlas",
    "head_dla",
    "head_score_difference",
    "run_head_scores",
    "run_problems",
    "task_name",
    "HeadDLA",
]

PROVENANCE_COLUMNS = [
    "model", "score", "run_id", "experiment", "dataset", "seed", "created", "source_table",
    "weights_sha256", "n_runs",
]


def head_score_difference(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """a - b per (layer, head) for two frames with layer, head, value (heads in both only)."""
    for name, df in (("a", a), ("b", b)):
        missing = [c for c in ("layer", "head", "value") if c not in df.columns]
        if missing:
            raise InterpError(f"frame {name} lacks column(s) {', '.join(missing)}")
    merged = a[["layer", "head", "value"]].merge(
        b[["layer", "head", "value"]], on=["layer", "head"], suffixes=("_a", "_b")
    )
    if merged.empty:
        raise InterpError("the two results share no (layer, head): are they from different models?")
    merged["value"] = merged["value_a"] - merged["value_b"]
    return merged


@dataclass(frozen=True)
class Atlas:
    """Per-head scores of one or more models. `table`: one row per (model, layer, head), one
    column per score; `provenance`: one row per (model, score) naming its run; `notes`: what
    was skipped and why."""

    table: pd.DataFrame
    provenance: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted(self.table["model"].unique().tolist()) if not self.table.empty else []

    def scores(self, model: str | None = None) -> list[str]:
        """Score columns (of `model`'s heads: columns that model has values for)."""
        table = self.for_model(model).table if model is not None else self.table
        cols = [c for c in table.columns if c not in ("model", "layer", "head")]
        return [c for c in cols if table[c].notna().any()]

    def for_model(self, model: str) -> Atlas:
        if model not in self.models:
            known = ", ".join(self.models) or "none"
            raise InterpError(f"the atlas has no model {model!r}; models: {known}")
        table = self.table[self.table["model"] == model]
        table = table.dropna(axis=1, how="all").reset_index(drop=True)
        prov = self.provenance[self.provenance["model"] == model].reset_index(drop=True)
        return Atlas(table, prov, list(self.notes))

    def _one_model(self, model: str | None) -> pd.DataFrame:
        if model is not None:
            return self.for_model(model).table
        if len(self.models) > 1:
            raise InterpError(
                f"the atlas holds several models ({', '.join(self.models)}); pass model=..."
            )
        return self.table

    def correlations(self, model: str | None = None, min_heads: int = 3) -> pd.DataFrame:
        """Spearman rank correlation between score columns, over the heads that have both."""
        table = self._one_model(model)
        cols = self.scores(model) if model is not None else self.scores()
        return table[cols].corr(method="spearman", min_periods=min_heads)

    def top_k(self, score: str, k: int, model: str | None = None) -> pd.DataFrame:
        """The `k` heads with the largest |score| (model, layer, head, value)."""
        table = self._one_model(model)
        if score not in table.columns:
            raise InterpError(f"no score {score!r}; scores: {', '.join(self.scores(model))}")
        vals = table[score].dropna()
        idx = vals.abs().sort_values(ascending=False, kind="stable").index[:k]
        return table.loc[idx, ["model", "layer", "head"]].assign(value=vals.loc[idx]).reset_index(drop=True)

    def top_k_overlap(self, k: int = 10, model: str | None = None) -> pd.DataFrame:
        """Square frame: the fraction of score A's top-k heads (by |value|) that are also in
        score B's top-k (1 = the same heads)."""
        if k < 1:
            raise InterpError(f"k must be >= 1, got {k}")
        cols = self.scores(model) if model is not None else self.scores()
        tops = {
            c: set(self.top_k(c, k, model)[["layer", "head"]].itertuples(index=False, name=None))
            for c in cols
        }
        data = {
            a: [len(tops[a] & tops[b]) / max(1, min(len(tops[a]), len(tops[b]))) for b in cols]
            for a in cols
        }
        return pd.DataFrame(data, index=cols)[cols]

    def head_scores(self, layer: int, head: int, model: str | None = None) -> pd.DataFrame:
        """One head's scores: score, value, rank (1 = largest |value|), n_heads, percentile,
        run_id (where the score came from)."""
        table = self._one_model(model)
        model_name = model if model is not None else (self.models[0] if self.models else None)
        row = table[(table["layer"] == layer) & (table["head"] == head)]
        out = []
        for c in self.scores(model) if model is not None else self.scores():
            if row.empty or pd.isna(row[c].iloc[0]):
                continue
            v = float(row[c].iloc[0])
            col = table[c].dropna().abs()
            rank = int((col > abs(v)).sum()) + 1
            prov = self.provenance[(self.provenance["model"] == model_name) & (self.provenance["score"] == c)]
            out.append({
                "score": c, "value": v, "rank": rank, "n_heads": len(col),
                "percentile": 100.0 * (col <= abs(v)).mean(),
                "run_id": prov["run_id"].iloc[0] if not prov.empty else None,
            })
        return pd.DataFrame(out, columns=["score", "value", "rank", "n_heads", "percentile", "run_id"])

    def select(
        self,
        model: str,
        *,
        scores: list[str] | None = None,
        layers: tuple[int, int] | None = None,
        sort_by: str | None = None,
        top: int | None = None,
    ) -> pd.DataFrame:
        """A filtered view for display: some score columns, a layer range, the `top` heads by
        |sort_by|."""
        table = self.for_model(model).table
        cols = ["layer", "head", *(scores if scores is not None else self.scores(model))]
        view = table[[c for c in cols if c in table.columns]]
        if layers is not None:
            view = view[(view["layer"] >= layers[0]) & (view["layer"] <= layers[1])]
        if sort_by is not None and sort_by in view.columns:
            order = view[sort_by].abs().sort_values(ascending=False, na_position="last", kind="stable")
            view = view.loc[order.index]
        if top is not None:
            view = view.head(top)
        return view.reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """The wide table (model, layer, head, one column per score)."""
        return self.table.copy()

    def summary(self) -> list[str]:
        """Lines describing the atlas (what `interp atlas` prints)."""
        if self.table.empty:
            return ["the atlas is empty: no complete run holds per-head scores"]
        lines = []
        for m in self.models:
            sub = self.for_model(m)
            n = len(sub.table)
            lines.append(f"{m}: {n} heads, {len(sub.scores())} scores")
            for r in sub.provenance.itertuples():
                top = sub.top_k(r.score, 3)
                heads = ", ".join(f"L{t.layer}H{t.head} ({t.value:+.3g})" for t in top.itertuples())
                lines.append(f"  {r.score:<40} from {r.run_id} (of {r.n_runs} run(s)); top: {heads}")
            pairs = sub.score_pairs(k=10)
            if not pairs.empty:
                lines.append("  score pairs, by |Spearman|: rho over heads, share of shared top-10 heads")
                for p in pairs.head(15).itertuples():
                    lines.append(f"    {p.a} ~ {p.b}: rho {p.spearman:+.2f}, top-10 overlap {p.top_k_overlap:.2f}")
        return lines

    def score_pairs(self, k: int = 10, model: str | None = None) -> pd.DataFrame:
        """One row per pair of scores (a, b): Spearman rho over the heads with both, and the
        top-k overlap; sorted by |rho| (pairs with too few shared heads last)."""
        cols = self.scores(model) if model is not None else self.scores()
        if len(cols) < 2:
            return pd.DataFrame(columns=["a", "b", "spearman", "top_k_overlap"])
        rho, overlap = self.correlations(model), self.top_k_overlap(k, model)
        rows = [{"a": a, "b": b, "spearman": rho.loc[a, b], "top_k_overlap": overlap.loc[a, b]}
                for i, a in enumerate(cols) for b in cols[i + 1:]]
        df = pd.DataFrame(rows)
        order = df["spearman"].abs().sort_values(ascending=False, na_position="last").index
        return df.reindex(order).reset_index(drop=True)


def _in_grid(manifest: dict[str, Any], grid: str | None) -> bool:
    record = manifest.get("grid")
    return grid is None or (isinstance(record, dict) and record.get("id") == grid)


def _usable_manifest(row: Any, model: str | None, notes: list[str], grid: str | None = None) -> dict[str, Any] | None:
    """The manifest of a listed run whose scores the atlas takes, else None (with a note,
    except for runs of another model). Problems that leave it usable (a table missing) are
    noted too: the CLI prints what the app shows."""
    run = Run(row.path)
    try:
        manifest = run.read_manifest()
    except RunStoreError as exc:
        notes.append(f"run {row.run_id} skipped: {exc}")
        return None
    malformed = manifest_problems(manifest)
    if malformed:
        notes.append(f"run {row.run_id} skipped: its manifest is malformed ({'; '.join(malformed)})")
        return None
    model_id = manifest.get("model_id")
    if not isinstance(model_id, str):
        notes.append(f"run {row.run_id} skipped: its manifest names no model_id")
        return None
    if (model is not None and model_id != model) or not _in_grid(manifest, grid):
        return None
    problems = run_problems(run, manifest)
    if manifest.get("format_version") != FORMAT_VERSION:
        notes.append(f"run {row.run_id} skipped: " + problems[0])
        return None
    if row.status != "complete":
        notes.append(f"run {row.run_id} skipped: status {row.status!r}, not complete")
        return None
    notes.extend(problems)
    return manifest


@dataclass
class _Collected:
    """Per (model, score): the newest run's values, the run's manifest, how many runs had it."""

    chosen: dict[tuple[str, str], tuple[pd.DataFrame, dict[str, Any]]] = field(default_factory=dict)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    shas: dict[str, set[str]] = field(default_factory=dict)

    def add(self, run_id: str, manifest: dict[str, Any], scores: pd.DataFrame, notes: list[str]) -> None:
        model_id = manifest["model_id"]
        if isinstance(manifest.get("weights_sha256"), str):
            self.shas.setdefault(model_id, set()).add(manifest["weights_sha256"])
        for score, part in scores.groupby("score", sort=False):
            part = part[part["value"].notna()]
            if part.empty:  # an all-NaN score says nothing: an older run's values may stand
                notes.append(f"run {run_id}: score {score} has no values (all NaN); skipped")
                continue
            key = (model_id, str(score))
            self.counts[key] = self.counts.get(key, 0) + 1
            self.chosen.setdefault(key, (part, manifest | {"_run_id": run_id}))

    def weight_notes(self) -> list[str]:
        return [f"model {m}: runs used {len(s)} different weights (sha256); "
                "scores from different weights share one atlas row per head"
                for m, s in self.shas.items() if len(s) > 1]

    def provenance(self) -> list[dict[str, Any]]:
        rows = []
        for (model_id, score), (part, manifest) in self.chosen.items():
            dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
            rows.append({
                "model": model_id, "score": score, "run_id": manifest["_run_id"],
                "experiment": manifest.get("experiment"), "dataset": dataset.get("name"),
                "seed": manifest.get("seed"), "created": manifest.get("created_at"),
                "source_table": part["source_table"].iloc[0],
                "weights_sha256": manifest.get("weights_sha256"), "n_runs": self.counts[(model_id, score)],
            })
        return rows


def build_atlas(store: RunStore, model: str | None = None, grid: str | None = None) -> Atlas:
    """Collect the per-head scores of every complete run (of `model`, when given; of the grid
    whose id is `grid`, when given: `interp.io.grid`)."""
    if grid is not None:
        from interp.io.grid import require_grid

        require_grid(store, grid)
    notes: list[str] = []
    collected = _Collected()
    for row in store.list_runs().itertuples():  # newest first: the first run seen per score wins
        manifest = _usable_manifest(row, model, notes, grid)
        if manifest is not None:
            scores = run_head_scores(Run(row.path), manifest, notes=notes)
            collected.add(row.run_id, manifest, scores, notes)
    notes.extend(collected.weight_notes())
    prov = collected.provenance()
    if not prov:
        return Atlas(pd.DataFrame(columns=["model", "layer", "head"]),
                     pd.DataFrame(columns=PROVENANCE_COLUMNS), notes)
    frames = [part.assign(model=m) for (m, _), (part, _) in collected.chosen.items()]
    long = pd.concat(frames, ignore_index=True)
    table = long.pivot_table(index=["model", "layer", "head"], columns="score", values="value",
                             aggfunc="first", sort=True)
    table.columns.name = None
    order = [p["score"] for p in prov]  # columns in the order runs were read (newest first)
    table = table.reset_index().reindex(columns=["model", "layer", "head", *dict.fromkeys(order)])
    return Atlas(table, pd.DataFrame(prov, columns=PROVENANCE_COLUMNS), notes)
