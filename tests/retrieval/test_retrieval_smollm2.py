"""Retrieval heads on the real SmolLM2-135M-Instruct: it answers a needle question, real copy
scores match an independent no-cache decoding loop on the raw HF model, teacher forcing equals
greedy, and the notebook and the experiment run end to end on a small setting."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp.analyses.retrieval import score_greedy, score_teacher_forced, stop_token_ids
from interp.cli import main
from interp.data.needles import build_trials, load_needles

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smollm2(tokenizer):
    from interp.models.loading import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def trial(tokenizer):
    return build_trials(tokenizer, load_needles()[2:3], [150], [0.5])[0]  # the library password


@torch.no_grad()
def test_real_copies_match_raw_decoding_and_teacher_forcing(smollm2, trial):
    from transformers import AutoModelForCausalLM

    from interp.models import smollm2 as bundled

    stops = stop_token_ids(smollm2)
    got = score_greedy(smollm2, trial, max_new_tokens=24, stops=stops)
    assert got.recall == 1.0, got.response  # "The password ... is purple elephant seven."
    assert got.scores.max() > 0.5  # some head copies most of the answer

    raw = AutoModelForCausalLM.from_pretrained(str(bundled.cached_dir()[0]), attn_implementation="eager").eval()
    ids, keys = list(trial.prompt_ids), []
    for token in got.output_ids:  # no cache: each step one full forward over everything so far
        res = raw(input_ids=torch.tensor([ids]), output_attentions=True)
        assert int(res.logits[0, -1].argmax()) == token
        keys.append(torch.stack([a[0, :, -1].argmax(-1) for a in res.attentions]))
        ids.append(token)
    assert torch.equal(got.keys, torch.stack(keys, -1))

    forced, predicted = score_teacher_forced(smollm2, trial, got.output_ids, chunk_size=64, query_chunk=8)
    assert predicted == got.output_ids
    torch.testing.assert_close(forced.scores, got.scores)


def test_notebook_executes(run_notebook):
    env = {"INTERP_NB_LENGTHS": "150", "INTERP_NB_DEPTHS": "0.5", "INTERP_NB_N_NEEDLES": "2", "INTERP_NB_K": "3",
           "INTERP_NB_SEEDS": "0", "INTERP_NB_MASK_LENGTH": "100", "INTERP_NB_THREADS": "1"}
    assert not run_notebook("retrieval_heads.ipynb", env)


def test_experiment_runs_on_a_small_setting(tmp_path, capsys):
    import yaml

    cfg = yaml.safe_load((ROOT / "experiments" / "retrieval_heads.yaml").read_text())
    cfg["data"].update({"n_needles": 2, "lengths": [150], "depths": [0.5], "max_new_tokens": 24})
    cfg["masking"].update({"k": 3, "modes": ["uniform", "mean"], "seeds": [0], "lengths": [100], "n_needles": 2,
                           "depths": [0.5]})
    path = tmp_path / "ret.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs), "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "needle accuracy (unmasked): 100% of 2 trials" in out and "masking test on 2 trials" in out
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["analyses_done"] == ["retrieval_scores", "masking"]
    summary = pd.read_parquet(run_dir / "tables" / "masking_summary.parquet")
    assert list(summary["mode"]) == ["uniform", "mean"] and (summary["k"] == 3).all()
    figures = {p.name.split(".")[0] for p in (run_dir / "figures").iterdir()}
    assert {"retrieval_scores", "niah_accuracy", "masking"} <= figures
    from interp.io.atlas import build_atlas
    from interp.io.runstore import RunStore

    atlas = build_atlas(RunStore(runs), model="smollm2-135m")
    assert "retrieval.niah" in atlas.table.columns
