"""Do the experiments still make the same tables? Run every shipped experiment on a small setting
and compare its parquet tables with a snapshot taken from another checkout (before a refactor).

    python tools/same_tables.py snapshot /tmp/before          # in the old checkout
    python tools/same_tables.py snapshot /tmp/after           # in the new one
    python tools/same_tables.py compare /tmp/before /tmp/after

Each experiment runs through `python -m interp.cli run` with the current directory's `interp`
(so the same command works in a git worktree). Non-float columns must be equal exactly; float
columns within `--atol` (1e-6: merged sweep loops may change batching and summation order).
Columns whose values are times (`*_s`, `seconds`) are skipped. Exit 1 when anything differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# (snapshot name, experiment YAML, --set overrides): small settings of every shipped experiment.
TINY = {"model.name": "tiny-llama"}
SETTINGS: list[tuple[str, str, dict[str, str]]] = [
    ("ioi_small_smollm2", "ioi_small.yaml", {"data.n_prompts": "4", "data.position_n_prompts": "2"}),
    ("ioi_tiny_llama", "ioi.yaml", {**TINY, "data.n_prompts": "6", "data.position_n_prompts": "3",
                                    "analyses.head_patching.per_position": "true",
                                    "analyses.head_patterns.n_sequences": "2"}),
    ("ioi_tiny_gemma2", "ioi.yaml", {"model.name": "tiny-gemma2", "data.n_prompts": "4",
                                     "data.position_n_prompts": "2", "analyses.head_patterns.n_sequences": "2"}),
    ("ioi_circuit", "ioi_circuit.yaml", {**TINY, "data.n_prompts": "4"}),
    ("colored_objects", "colored_objects.yaml", {**TINY, "data.n_prompts": "4", "intervention.n_random": "1"}),
    ("knowledge_conflicts", "knowledge_conflicts.yaml", {
        **TINY, "data.known_only": "false", "data.max_per_relation": "8", "analyses.ph3.ks": "[1, 2]",
        "analyses.ph3.n_random": "1"}),
    ("mcq_letters", "mcq_letters.yaml", {**TINY, "data.n_prompts": "8", "analyses.compression.ranks": "[0, 1, 2]"}),
    ("retrieval_heads", "retrieval_heads.yaml", {
        **TINY, "data.n_needles": "1", "data.lengths": "[80]", "data.depths": "[0.5]", "data.max_new_tokens": "8",
        "masking.k": "2", "masking.seeds": "[0]", "masking.lengths": "[60]", "masking.depths": "[0.5]"}),
    ("speech_saliency", "speech_saliency.yaml", {
        "data.n_utterances": "1", "analyses.spes.patch_frames": "50", "analyses.spes.patch_mels": "80",
        "analyses.integrated_gradients.steps": "2", "analyses.integrated_gradients.max_utterances": "1",
        "analyses.deletion.step": "0.25", "output.example_utterances": "1"}),
    ("vision_heads", "vision_heads.yaml", {
        "data.n_probe": "2", "data.n_shapes": "2", "analyses.max_new_tokens": "3", "analyses.vhr.alphas": "[1.5]",
        "analyses.vhr.random_seeds": "[0]"}),
]
TIME_COLUMNS = ("seconds", "duration")


def snapshot(out: Path, only: list[str] | None) -> int:
    root = Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"  # one store: colored_objects reads the latest ioi_circuit run
        for name, yaml, sets in SETTINGS:
            if only and name not in only:
                continue
            cmd = [sys.executable, "-m", "interp.cli", "run", str(root / "experiments" / yaml),
                   "--runs-dir", str(runs), "--quiet", "--threads", "1"]
            for k, v in sets.items():
                cmd += ["--set", f"{k}={v}"]
            t0 = time.perf_counter()
            before = set(runs.iterdir()) if runs.exists() else set()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
            took = time.perf_counter() - t0
            if proc.returncode != 0:
                failed += 1
                print(f"{name}: FAILED ({took:.0f} s)\n{proc.stderr[-2000:]}")
                continue
            (run_dir,) = set(runs.iterdir()) - before
            dest = out / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(run_dir / "tables", dest)
            print(f"{name}: {len(list(dest.glob('*.parquet')))} tables ({took:.0f} s)")
    return 1 if failed else 0


def _is_time(column: str) -> bool:
    return column.endswith("_s") or any(t in column for t in TIME_COLUMNS)


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> list[str]:
    problems = []
    if list(a.columns) != list(b.columns):
        return [f"columns differ: {list(a.columns)} vs {list(b.columns)}"]
    if len(a) != len(b):
        return [f"row counts differ: {len(a)} vs {len(b)}"]
    for col in a.columns:
        if _is_time(col):
            continue
        x, y = a[col].reset_index(drop=True), b[col].reset_index(drop=True)
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            same_nan = np.isnan(xv) == np.isnan(yv)
            diff = np.abs(np.nan_to_num(xv) - np.nan_to_num(yv))
            if not same_nan.all() or (diff > atol).any():
                problems.append(f"{col}: max |diff| {diff.max():.3g}, NaN mismatches {(~same_nan).sum()}")
        elif not x.astype(str).equals(y.astype(str)):
            n = int((x.astype(str) != y.astype(str)).sum())
            problems.append(f"{col}: {n} of {len(x)} values differ (dtype {x.dtype} vs {y.dtype})")
    return problems


def compare(before: Path, after: Path, atol: float) -> int:
    bad = 0
    for exp in sorted(p for p in before.iterdir() if p.is_dir()):
        tables = sorted(exp.glob("*.parquet"))
        other = after / exp.name
        if not other.is_dir():
            print(f"{exp.name}: missing in {after}")
            bad += 1
            continue
        extra = sorted({p.name for p in other.glob("*.parquet")} - {p.name for p in tables})
        worst = 0.0
        problems = []
        for t in tables:
            if not (other / t.name).exists():
                problems.append(f"{t.stem}: missing")
                continue
            a, b = pd.read_parquet(t), pd.read_parquet(other / t.name)
            problems += [f"{t.stem}.{p}" for p in compare_frames(a, b, atol)]
            for col in a.columns:
                if col in b.columns and not _is_time(col) and pd.api.types.is_float_dtype(a[col]) \
                        and pd.api.types.is_float_dtype(b[col]) and len(a) == len(b) and len(a):
                    d = np.nanmax(np.abs(a[col].to_numpy(float) - b[col].to_numpy(float)), initial=0.0)
                    worst = max(worst, float(d))
        if extra:
            problems.append(f"new tables: {', '.join(extra)}")
        status = "same" if not problems else "DIFFERENT"
        print(f"{exp.name}: {status}: {len(tables)} tables, max float diff {worst:.2g}")
        for p in problems:
            print(f"    {p}")
        bad += bool(problems)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    s.add_argument("--only", nargs="*", help="snapshot names to run (default: all)")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--atol", type=float, default=1e-6)
    args = p.parse_args(argv)
    if args.cmd == "snapshot":
        return snapshot(args.out, args.only)
    return compare(args.before, args.after, args.atol)


if __name__ == "__main__":
    sys.exit(main())
