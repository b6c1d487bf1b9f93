"""Smoke test: the head-sweep benchmark runs end to end on a tiny model and agrees with
TransformerLens' own patching loop (the script exits 1 when the two maps differ)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Benchmark subprocesses load a model and time it: integration tier, not the fast unit tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_head_sweep_benchmark_runs(tmp_path):
    out = tmp_path / "numbers.json"
    # One thread: on a small shared CPU, oversubscribed torch threads make tiny forwards 10-40x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "head_sweep.py"), "--model", "tiny-llama", "--n-prompts", "4",
         "--threads", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "speed ratio (TL / ours):" in proc.stdout
    assert "target >= 3x:" in proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["n_prompts"] == 4
    assert numbers["max_abs_diff"] <= 1e-4
    assert numbers["ours_s"] > 0 and numbers["tl_s"] > 0


def test_attribution_benchmark_runs(tmp_path):
    out = tmp_path / "atp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attribution_patching.py"), "--model", "tiny-llama",
         "--n-prompts", "4", "--threads", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "forward equivalents (target <= 4:" in proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["agreement"]["spearman"] > 0.5


def test_retrieval_memory_benchmark_runs(tmp_path):
    out = tmp_path / "ret.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "retrieval_memory.py"), "--model", "tiny-llama", "--context", "300",
         "--chunk", "64", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # exit 1 when the two scorers' scores differ
    assert "memory ratio (ours / baseline):" in proc.stdout and "speed ratio" in proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["max_abs_diff"] == 0 and numbers["baseline_peak_bytes"] > 0


def test_edge_attribution_benchmark_runs(tmp_path):
    out = tmp_path / "edges.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "edge_attribution.py"), "--model", "tiny-llama",
         "--n-prompts", "4", "--steps", "2", "--exact-edges", "20", "--threads", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EAP cost:" in proc.stdout and "target <= 3m + 3 = 9" in proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["exact_edges"] == 20 and numbers["eap_forwards"] > 0
    assert numbers["agreement"]["n_sites"] == 20
