"""The IOI experiment on the real bundled model through the CLI, and the notebook, on a
reduced setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_ioi_experiment_end_to_end(tmp_path):
    cmd = [
        sys.executable, "-m", "interp.cli", "run", str(ROOT / "experiments" / "ioi.yaml"),
        "--runs-dir", str(tmp_path), "--quiet",
        "--set", "data.n_prompts=6", "--set", "data.templates=[0, 2]",
        "--set", "data.position_n_prompts=2",
        "--set", "analyses.residual_patching.components=[resid_pre]",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top heads by patching" in proc.stdout
    assert "accuracy: top-1 = answer" in proc.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["model_id"] == "smollm2-135m" and len(manifest["weights_sha256"]) == 64
    import pandas as pd

    heads = pd.read_parquet(run_dir / "tables" / "head_patching.parquet")
    assert len(heads) == 30 * 9
    acc = pd.read_parquet(run_dir / "tables" / "accuracy.parquet")
    assert (acc["clean_logit_diff"] > 0).mean() >= 0.8  # the model does IOI
    scores = pd.read_parquet(run_dir / "tables" / "head_scores.parquet")
    induction = scores[scores.score == "induction"].sort_values("value", ascending=False)
    assert induction["value"].iloc[0] > 0.5  # SmolLM2 has strong induction heads (L18H6 ~0.9)


def test_notebook_executes(run_notebook):
    assert not run_notebook("ioi_walkthrough.ipynb", {"INTERP_NB_N_PROMPTS": "4", "INTERP_NB_TEMPLATES": "0"})
