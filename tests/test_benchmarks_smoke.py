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


def test_gpu_smoke_without_a_gpu_says_so_and_passes():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA GPU here; nothing to compare" in proc.stdout


def test_gpu_smoke_compare_tables(tmp_path):
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "benchmarks" / "gpu_smoke.py")
    gpu_smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_smoke)
    a, b = tmp_path / "cpu", tmp_path / "cuda"
    a.mkdir(), b.mkdir()
    base = pd.DataFrame({"layer": [0, 1], "label": ["L0H0", "L1H0"], "effect": [0.5, -0.25]})
    base.to_parquet(a / "head_patching.parquet")
    base.assign(effect=base.effect + 5e-4).to_parquet(b / "head_patching.parquet")  # within 1e-3
    assert gpu_smoke.compare_tables(a, b) == []
    base.assign(effect=base.effect + 5e-3).to_parquet(b / "head_patching.parquet")
    assert gpu_smoke.compare_tables(a, b) == ["head_patching.effect: max |diff| 0.005, NaN mismatches 0"]
    base.assign(label=["L0H0", "L1H1"]).to_parquet(b / "head_patching.parquet")
    (problem,) = gpu_smoke.compare_tables(a, b)
    assert problem.startswith("head_patching.label: 1 of 2 values differ")
    base.to_parquet(b / "head_patching.parquet")
    base.to_parquet(b / "extra.parquet")
    assert gpu_smoke.compare_tables(a, b) == ["extra.parquet: only in cuda"]


def test_gpu_scaling_machinery_on_cpu(tmp_path):
    """The GPU scaling script's timing and comparisons, on the CPU with the tiny model; without a
    GPU the default (cuda) run says so and exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "scaling.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_scaling.py"), "--models", "tiny-llama",
                           "--device", "cpu", "--n-prompts", "4", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())
    assert row["sweep_max_diff"] <= 1e-4 and row["atp_max_diff"] <= 1e-4 and row["sweep_ratio"] > 0
    if not __import__("torch").cuda.is_available():
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_scaling.py")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "no CUDA GPU here" in proc.stdout


def test_scaling_benchmark_runs(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "scaling.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--model", "tiny-llama", "--n-prompts", "4",
         "--threads", "1", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # exit 1 when a map differs from the local one
    assert "speed ratio (local / ray sweep): 1 worker(s)" in proc.stdout and "2 worker(s)" in proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["local_sharded_max_abs_diff"] == 0
    assert set(numbers["ray"]) == {"1", "2"} and all(r["max_abs_diff"] <= 1e-6 for r in numbers["ray"].values())


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
