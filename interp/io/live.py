"""Live analysis of one prompt pair (what the app's Live page runs), and saving it as a run.

`live_patching` validates the pair exactly as a dataset file would be validated
(`tokenize_pairs`: equal token lengths, single-token answers), then runs head patching and
direct logit attribution. `save_live_run` writes the result in the shape `interp run` writes
(manifest with `kind: live`, tables `dataset`, `head_patching`, `dla`, `dla_per_prompt`,
figures and `report.html`), so it shows up in the run list and the atlas (as task "live").

    res = live_patching(model, "When Mary and John went to the store, John gave a drink to",
                        "When Alice and Bob went to the store, Carl gave a drink to",
                        " Mary", " John")
    res.patching.top(5)
    run = save_live_run(res, RunStore("runs"), model)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from interp.analyses.dla import direct_logit_attribution
from interp.analyses.patching import patch_heads
from interp.analyses.results import DLAResult, PatchingResult
from interp.core.errors import DatasetError, InterpError
from interp.core.metrics import get_metric
from interp.core.model import HookedModel
from interp.data.pairs import PairDataset, PromptPair, tokenize_pairs
from interp.io.report import ReportSection, write_report
from interp.io.runstore import Run, RunStore, build_manifest
from interp.viz.heatmaps import dla_bar, head_heatmap

__all__ = ["LiveResult", "live_patching", "save_live_run", "LIVE_TASK"]

LIVE_TASK = "live"
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class LiveResult:
    """Head patching and DLA of one clean/corrupt pair on one model."""

    pair: PromptPair
    model_name: str
    metric: str
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    patching: PatchingResult
    dla: DLAResult
    duration_s: float

    @property
    def dataset(self) -> PairDataset:
        return PairDataset((self.pair,), name=LIVE_TASK, source={"live": True})

    def token_frame(self) -> pd.DataFrame:
        """position, clean token, corrupt token, whether they differ (where the corruption is)."""
        return pd.DataFrame({
            "position": range(len(self.clean_tokens)),
            "clean": self.clean_tokens,
            "corrupt": self.corrupt_tokens,
            "differs": [a != b for a, b in zip(self.clean_tokens, self.corrupt_tokens, strict=True)],
        })

    def head_dla_frame(self) -> pd.DataFrame:
        """DLA rows of the heads only (label, kind, layer, head, contribution, std)."""
        df = self.dla.to_frame()
        return df[df["kind"] == "head"].reset_index(drop=True)


def live_patching(
    model: HookedModel,
    clean: str,
    corrupt: str,
    answer: str,
    distractor: str,
    *,
    metric: str = "logit_diff",
    direction: str = "denoising",
    progress: ProgressFn | None = None,
) -> LiveResult:
    """Patch every head's output (clean into corrupt) and attribute the clean logit difference.

    Raises `DatasetError` (bad prompts: empty, unequal token lengths, multi-token answers) or
    `InterpError` (unknown metric, or clean and corrupt scoring the same) with the message to
    show the user."""
    for role, text in (("clean prompt", clean), ("corrupt prompt", corrupt),
                       ("answer", answer), ("distractor", distractor)):
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"the {role} is empty")
    get_metric(metric)  # an unknown metric fails before any forward
    pair = PromptPair(clean, corrupt, answer, distractor)
    dataset = PairDataset((pair,), name=LIVE_TASK, source={"live": True})
    try:
        pairs = tokenize_pairs(dataset, model.tokenizer, prepend_bos=model.prepend_bos)
    except DatasetError as exc:
        # one pair, so "line 1:" would only confuse; keep the library's message otherwise
        raise DatasetError(str(exc).removeprefix("line 1: ")) from None
    t0 = time.perf_counter()
    patching = patch_heads(model, pairs, direction=direction, metric=metric, progress=progress)
    patching.normalised  # noqa: B018 - raises InterpError when clean == corrupt
    dla = direct_logit_attribution(model, pairs)
    batch = pairs.batches[0]
    return LiveResult(
        pair=pair, model_name=model.name, metric=metric,
        clean_tokens=model.str_tokens(batch.clean[0]), corrupt_tokens=model.str_tokens(batch.corrupt[0]),
        patching=patching, dla=dla, duration_s=round(time.perf_counter() - t0, 2),
    )


def save_live_run(
    result: LiveResult, store: RunStore, model: HookedModel, name: str = "live", *, seed: int = 0
) -> Run:
    """Write `result` as a complete run in `store` (manifest `kind: live`); returns the run.

    `seed` is the one the model was loaded with (it fixes the tiny random models' weights)."""
    if model.name != result.model_name:
        raise InterpError(f"the result is from {result.model_name!r}, not {model.name!r}")
    p = result.patching
    config = {
        "kind": "live",
        "name": name,
        "description": "live analysis of one prompt pair (interp app)",
        "seed": seed,
        "model": {"name": model.name, "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")},
        "data": {"source": "live", "clean": result.pair.clean, "corrupt": result.pair.corrupt,
                 "answer": result.pair.answer, "distractor": result.pair.distractor},
        "analyses": {"head_patching": {"direction": p.direction, "metric": p.metric}, "dla": {}},
    }
    run = store.create(name)
    run.write_manifest(build_manifest(
        config, model_id=model.name, weights_sha256=model.weights_sha256, seed=seed,
        extra={
            "experiment": "live", "kind": "live", "task": LIVE_TASK, "backend": model.backend,
            "device": str(model.device), "model_spec": vars(model.spec),
            "dataset": {"name": LIVE_TASK, "n": 1, "source": {"live": True}},
            "analyses_done": [],
        },
    ))
    try:
        sections = _write_tables(run, result)
    except BaseException as exc:
        run.mark("failed", error=exc)
        raise
    run.update_manifest(analyses_done=["head_patching", "dla"], duration_s=result.duration_s)
    run.mark("complete")
    write_report(run, title=f"{name}: live analysis on {model.name}", summary_lines=_summary(result),
                 sections=sections)
    return run


def _write_tables(run: Run, result: LiveResult) -> list[ReportSection]:
    p = result.patching
    run.write_table("dataset", result.dataset.to_frame())
    hp = p.to_frame()
    run.write_table("head_patching", hp)
    fig = head_heatmap(hp, "normalised", title=f"Head output patching ({p.direction}, {p.metric}, normalised)")
    run.write_figure("head_patching", fig)
    dla_df = result.dla.to_frame()
    run.write_table("dla", dla_df)
    run.write_table("dla_per_prompt", result.dla.per_prompt_frame())
    bar = dla_bar(dla_df, top_k=20, title="Direct logit attribution")
    run.write_figure("dla", bar)
    run.write_figure("dla_heads", head_heatmap(result.head_dla_frame(), "contribution", title="DLA per head"))
    return [
        ReportSection("Prompt pair", text=f"clean: {result.pair.clean!r}\n\ncorrupt: {result.pair.corrupt!r}\n\n"
                      f"answer {result.pair.answer!r} vs distractor {result.pair.distractor!r}"),
        ReportSection("Head patching", text=f"clean metric {p.clean_metric:.3f}, corrupt {p.corrupt_metric:.3f}; "
                      "1 = fully clean behaviour, 0 = corrupt.", figure=fig, table=p.top(10)),
        ReportSection("Direct logit attribution", figure=bar),
    ]


def _summary(result: LiveResult) -> list[str]:
    top = result.patching.top(5)
    heads = ", ".join(f"L{r.layer}H{r.head} ({r.normalised:+.2f})" for r in top.itertuples())
    return [
        f"{result.patching.metric}: clean {result.patching.clean_metric:.3f}, "
        f"corrupt {result.patching.corrupt_metric:.3f}",
        f"top heads by patching: {heads}",
        f"DLA parts sum to the logit difference within {result.dla.max_abs_error:.2e}",
    ]
