"""Knowledge conflicts on the real SmolLM2-135M-Instruct, small settings: the experiment end to
end (it knows many facts closed-book; both memory and context answers occur under counterfactual
contexts) and the notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_experiment_end_to_end(tmp_path, capsys, tokenizer):
    runs = tmp_path / "runs"
    args = [
        "run",
        str(ROOT / "experiments" / "knowledge_conflicts.yaml"),
        "--runs-dir",
        str(runs),
        "--quiet",
        "--set",
        "data.relations=[capital_of, antonym]",
        "--set",
        "data.heldout_relations=[antonym]",
        "--set",
        "data.max_per_relation=6",
        "--set",
        "analyses.ph3.ks=[2]",
        "--set",
        "analyses.ph3.n_random=1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "memory heads" in out and "prune top-2 memory heads" in out
    (run_dir,) = list(runs.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["model_id"] == "smollm2-135m"
    tables = run_dir / "tables"
    known = pd.read_parquet(tables / "closed_book_by_relation.parquet").set_index("relation")[
        "n_known"
    ]
    # measured: capital_of 52/60, antonym 29/40 (chat template, assistant turn prefilled with the cloze)
    assert known["capital_of"] >= 45 and known["antonym"] >= 22, known
    rates = pd.read_parquet(tables / "conflict_rates.parquet")
    # measured on 155 known facts of 9 relations: memory 33%, context 54%; both occur on these 12 too
    assert {"memory", "context"} <= set(rates["outcome"]) and len(rates) == 12
    scores = pd.read_parquet(tables / "head_scores.parquet")
    assert len(scores) == 2 * 30 * 9
    ph3 = pd.read_parquet(tables / "ph3_summary.parquet")
    assert list(ph3["condition"]) == [
        "none",
        "prune_context",
        "random_context",
        "prune_memory",
        "random_memory",
    ]
    assert ph3["memory_rate"].between(0, 1).all()


def test_notebook_executes(run_notebook):
    env = {
        "INTERP_NB_RELATIONS": "capital_of,antonym",
        "INTERP_NB_HELDOUT": "antonym",
        "INTERP_NB_MAX_PER_RELATION": "5",
        "INTERP_NB_KS": "2",
        "INTERP_NB_N_RANDOM": "1",
    }
    assert not run_notebook("knowledge_conflicts.ipynb", env)
