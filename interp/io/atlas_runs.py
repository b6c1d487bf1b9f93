"""Reading one run's per-head results: its task name, what is wrong with it, its per-head
scores in tidy form (`run_head_scores`, what the atlas collects) and one head's DLA.

Per-head scores come from `head_patching` tables (``patching.<task>.<direction>.<metric>``),
`dla` tables (rows of kind "head": ``dla.<task>``) and `head_scores` tables (columns layer,
head, score, value). See `interp.io.atlas` for the atlas built from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from interp.io.runstore import FORMAT_VERSION, Run, RunStoreError, manifest_problems

__all__ = [
    "HEAD_SCORES_TABLE",
    "HeadDLA",
    "head_dla",
    "run_head_scores",
    "run_problems",
    "task_name",
]

HEAD_SCORES_TABLE = "head_scores"
HEAD_SCORE_COLUMNS = ("layer", "head", "score", "value")
# Tables a manifest's `analyses_done` entry promises (the runner writes them in this order).
_PROMISED_TABLES = {
    "accuracy": ("accuracy",),
    "head_patching": ("head_patching",),
    "head_patching_per_position": ("head_patching_per_position",),
    "residual_patching": ("residual_patching",),
    "dla": ("dla", "dla_per_prompt"),
    "head_patterns": ("head_scores",),
}


def task_name(manifest: dict[str, Any]) -> str:
    """The task a run's scores are about: manifest `task`, "ioi", or the dataset's name."""
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    for candidate in (
        manifest.get("task"),
        "ioi" if data.get("source") == "ioi" else None,
        dataset.get("name"),
        config.get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            # dots separate the parts of a score name, so they cannot appear inside one
            return re.sub(r"[^A-Za-z0-9_-]+", "_", candidate.strip())
    return "unknown"


def run_problems(run: Run, manifest: dict[str, Any] | None = None) -> list[str]:
    """What makes a run unusable or incomplete, in words (empty when it is fine).

    Reads the manifest if not given; checks the format version and that every table the
    manifest's `analyses_done` promises exists."""
    if manifest is None:
        try:
            manifest = run.read_manifest()
        except RunStoreError as exc:
            return [str(exc)]
    problems = [f"run {run.run_id} has a malformed manifest: {p}" for p in manifest_problems(manifest)]
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        problems.append(
            f"run {run.run_id} has manifest format_version {version!r}; this version of interp "
            f"reads format {FORMAT_VERSION} (re-run the experiment to upgrade it)"
        )
    done = manifest.get("analyses_done")
    present = set(run.tables())
    if isinstance(done, list):
        missing = [t for a in done for t in _PROMISED_TABLES.get(str(a), ()) if t not in present]
        if missing:
            problems.append(
                f"run {run.run_id} is missing table(s) {', '.join(missing)} that its manifest "
                "lists as done (files deleted or moved?)"
            )
    return problems


def _need(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunStoreError(f"table {table!r} lacks column(s) {', '.join(missing)}")


def _tidy(df: pd.DataFrame, score: str | pd.Series, value: str, table: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "layer": pd.to_numeric(df["layer"]).astype("int64"),
            "head": pd.to_numeric(df["head"]).astype("int64"),
            "score": score,
            "value": pd.to_numeric(df[value]).astype("float64"),
            "source_table": table,
        }
    )
    return out.reset_index(drop=True)


def _patching_scores(df: pd.DataFrame, task: str) -> pd.DataFrame:
    _need(df, ("layer", "head", "normalised", "direction", "metric"), "head_patching")
    if "position" in df.columns:
        raise RunStoreError("head_patching has a position column; expected one row per head")
    score = "patching." + task + "." + df["direction"].astype(str) + "." + df["metric"].astype(str)
    return _tidy(df, score, "normalised", "head_patching")


def _dla_scores(df: pd.DataFrame, task: str) -> pd.DataFrame:
    _need(df, ("kind", "layer", "head", "contribution"), "dla")
    return _tidy(df[df["kind"] == "head"], f"dla.{task}", "contribution", "dla")


def _named_scores(df: pd.DataFrame, task: str) -> pd.DataFrame:
    _need(df, HEAD_SCORE_COLUMNS, HEAD_SCORES_TABLE)
    return _tidy(df, df["score"].astype(str), "value", HEAD_SCORES_TABLE)


# The tables a run's per-head scores come from, in the order they are read.
_SCORE_READERS: tuple[tuple[str, Callable[[pd.DataFrame, str], pd.DataFrame]], ...] = (
    ("head_patching", _patching_scores),
    ("dla", _dla_scores),
    (HEAD_SCORES_TABLE, _named_scores),
)


def _no_scores() -> pd.DataFrame:
    return pd.DataFrame(columns=[*HEAD_SCORE_COLUMNS, "source_table"])


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def _read_scores(run: Run, name: str, build, task: str, notes: list[str] | None) -> pd.DataFrame | None:
    try:
        return build(run.read_table(name), task)
    except Exception as exc:  # a corrupt parquet raises arrow/OS errors of many kinds
        _note(notes, f"run {run.run_id}: table {name!r} skipped ({type(exc).__name__}: {exc})")
        return None


def run_head_scores(
    run: Run, manifest: dict[str, Any] | None = None, *, notes: list[str] | None = None
) -> pd.DataFrame:
    """Every per-head score of one run, tidy: layer, head, score, value, source_table.

    A table that cannot be read or has the wrong columns is skipped (with a line in `notes`
    when given); this never raises for a bad table."""
    if manifest is None:
        try:
            manifest = run.read_manifest()
        except RunStoreError as exc:
            _note(notes, str(exc))
            return _no_scores()
    task, tables = task_name(manifest), set(run.tables())
    parts = [_read_scores(run, name, build, task, notes) for name, build in _SCORE_READERS if name in tables]
    parts = [p for p in parts if p is not None]
    if not parts:
        return _no_scores()
    out = pd.concat(parts, ignore_index=True)
    dup = out.duplicated(["score", "layer", "head"], keep="first")
    if dup.any():
        names = sorted(out.loc[dup, "score"].unique())
        _note(notes, f"run {run.run_id}: repeated (layer, head) rows in {names}; kept the first")
    return out[~dup].reset_index(drop=True)


@dataclass(frozen=True)
class HeadDLA:
    """One head's direct logit attribution in a run: mean, spread, rank, and per prompt."""

    layer: int
    head: int
    contribution: float
    std: float
    rank: int  # 1 = largest |contribution| among the run's heads
    n_heads: int
    per_prompt: pd.DataFrame  # prompt, contribution (and clean, when the dataset table exists)


def head_dla(run: Run, layer: int, head: int) -> HeadDLA | None:
    """The head's DLA from the run's `dla` (and `dla_per_prompt`) tables; None if it has none."""
    if "dla" not in run.tables():
        return None
    df = run.read_table("dla")
    _need(df, ("kind", "layer", "head", "contribution"), "dla")
    heads = df[df["kind"] == "head"].reset_index(drop=True)
    row = heads[(heads["layer"] == layer) & (heads["head"] == head)]
    if row.empty:
        return None
    rank = int((heads["contribution"].abs() > abs(float(row["contribution"].iloc[0]))).sum()) + 1
    per_prompt = pd.DataFrame(columns=["prompt", "contribution"])
    if "dla_per_prompt" in run.tables():
        pp = run.read_table("dla_per_prompt")
        label = f"L{layer}H{head}"
        per_prompt = pp[pp["label"] == label][["prompt", "contribution"]].reset_index(drop=True)
        if "dataset" in run.tables():
            ds = run.read_table("dataset")
            if {"pair", "clean"} <= set(ds.columns):
                per_prompt = per_prompt.merge(
                    ds[["pair", "clean"]].rename(columns={"pair": "prompt"}), on="prompt", how="left"
                )
    std = float(row["std"].iloc[0]) if "std" in row.columns else float("nan")
    return HeadDLA(int(layer), int(head), float(row["contribution"].iloc[0]), std, rank,
                   len(heads), per_prompt)
