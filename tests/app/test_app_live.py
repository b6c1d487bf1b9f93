"""Live analysis: validation messages, results consistent with the model, saving as a run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from interp.core.errors import DatasetError, InterpError
from interp.io.atlas import build_atlas, run_problems
from interp.io.live import live_patching, save_live_run
from interp.io.runstore import RunStore

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Alice and Bob went to the store, Carl gave a drink to"


@pytest.fixture(scope="module")
def result(tiny_llama):
    calls = []
    res = live_patching(tiny_llama, CLEAN, CORRUPT, " Mary", " John", progress=lambda d, t: calls.append((d, t)))
    return res, calls


def test_live_result_is_consistent_with_the_model(tiny_llama, result, assert_clean):
    res, calls = result
    assert calls[-1] == (16, 16)
    assert res.patching.values.shape == (4, 4) and res.patching.n_prompts == 1
    a, d = (tiny_llama.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    with torch.no_grad():
        clean_last = tiny_llama.forward(tiny_llama.to_tokens(CLEAN))[0, -1]
        corrupt_last = tiny_llama.forward(tiny_llama.to_tokens(CORRUPT))[0, -1]
    assert res.patching.clean_metric == pytest.approx(float(clean_last[a] - clean_last[d]), abs=1e-4)
    assert res.patching.corrupt_metric == pytest.approx(float(corrupt_last[a] - corrupt_last[d]), abs=1e-4)
    assert float(res.dla.logit_diff[0]) == pytest.approx(res.patching.clean_metric, abs=1e-4)
    assert res.dla.max_abs_error < 1e-3
    tokens = res.token_frame()
    assert (tokens["differs"].sum() == 3
            and tokens.loc[tokens["differs"], "clean"].str.strip().tolist() == ["Mary", "John", "John"])
    assert len(res.head_dla_frame()) == 16
    assert_clean(tiny_llama)


@pytest.mark.parametrize(
    "args, message",
    [
        ((CLEAN, "When Alice and Bob went to the big store, Carl gave a drink to", " Mary", " John"),
         "clean prompt has 14 tokens but corrupt has 15"),
        ((CLEAN, CORRUPT, " Xyzzyplughfrobnicate", " John"), "answer ' Xyzzyplughfrobnicate' is"),
        ((CLEAN, CORRUPT, " Mary", " Mary"), "same token"),
        (("", CORRUPT, " Mary", " John"), "clean prompt is empty"),
    ],
)
def test_bad_pairs_give_the_dataset_message(tiny_llama, args, message):
    with pytest.raises(DatasetError, match=message) as info:
        live_patching(tiny_llama, *args)
    assert not str(info.value).startswith("line 1")


def test_unknown_metric_and_identical_prompts(tiny_llama):
    with pytest.raises(InterpError, match="unknown metric"):
        live_patching(tiny_llama, CLEAN, CORRUPT, " Mary", " John", metric="nope")
    with pytest.raises(InterpError, match="equal"):
        live_patching(tiny_llama, CLEAN, CLEAN, " Mary", " John")


def test_save_live_run_writes_a_run_like_interp_run(tiny_llama, result, tmp_path):
    res, _ = result
    store = RunStore(tmp_path / "runs")
    run = save_live_run(res, store, tiny_llama, name="my_pair")
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["kind"] == "live" and manifest["status"] == "complete" and manifest["format_version"] == 1
    assert manifest["task"] == "live" and manifest["model_id"] == "tiny-llama"
    assert manifest["config"]["data"]["clean"] == CLEAN and manifest["analyses_done"] == ["head_patching", "dla"]
    assert len(manifest["weights_sha256"]) == 64
    assert set(run.tables()) == {"dataset", "head_patching", "dla", "dla_per_prompt"}
    assert set(run.figures()) == {"head_patching", "dla", "dla_heads"}
    assert "Head patching" in (run.path / "report.html").read_text()
    assert run_problems(run) == []
    listed = store.list_runs()
    assert listed.loc[0, "run_id"] == run.run_id and listed.loc[0, "experiment"] == "live"
    atlas = build_atlas(store)
    assert atlas.scores() == ["patching.live.denoising.logit_diff", "dla.live"]
    with pytest.raises(InterpError, match="not 'other'"):
        save_live_run(res, store, SimpleNamespace(name="other"))
    assert len(store.list_runs()) == 1
