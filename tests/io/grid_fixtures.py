"""A synthetic scored run for the grid tests (run store, atlas, compare, the app's Atlas page)."""

import pandas as pd

from interp.io.runstore import RunStore, build_manifest


def scores_run(store: RunStore, model: str, values: list[float], grid: dict | None) -> str:
    """A complete run of `model` with a 2x2 `head_scores` table (`values`), recorded as a cell of
    `grid` (its manifest's `grid` record) when given; its run id."""
    run = store.create("scores")
    run.write_manifest(build_manifest({"name": "scores"}, model_id=model, weights_sha256=None, seed=0,
                                      extra={"experiment": "synthetic"}))
    heads = [(lay, h) for lay in range(2) for h in range(2)]
    run.write_table("head_scores", pd.DataFrame({"layer": [lay for lay, _ in heads], "head": [h for _, h in heads],
                                                 "score": "retrieval.niah", "value": values}))
    run.mark("complete")
    if grid is not None:
        run.update_manifest(grid=grid)
    return run.run_id
