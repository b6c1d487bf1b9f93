"""GPU smoke test: every shipped experiment kind, on a small setting, run on the GPU and on the
CPU; their parquet tables must agree (floats within 1e-3, everything else exactly).

The settings are `tools/same_tables.py`'s (one per experiment in experiments/*.yaml, tiny or
bundled models, a few prompts). Each experiment runs twice through `python -m interp.cli run`
with `--set model.device=cuda` and `--set model.device=cpu` (in two run stores, in the same
order: colored_objects reads the latest ioi_circuit run); with `--device-map`, the text
experiments run a third time with `--set model.device_map=auto` (accelerate spreads the blocks
over every visible GPU) and compare against the CPU too. One line per experiment; exit 1 on any
mismatch or failed run. Without a CUDA GPU it says so and exits 0 (nothing to compare).

    python benchmarks/gpu_smoke.py                      # all experiments, cuda vs cpu
    python benchmarks/gpu_smoke.py --only ioi_tiny_llama mcq_letters --device-map
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-3
NO_DEVICE_MAP = ("speech_saliency", "vision_heads")  # device maps are for text models only


def _same_tables() -> object:
    spec = importlib.util.spec_from_file_location("same_tables", ROOT / "tools" / "same_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_tables(a: Path, b: Path, atol: float = ATOL) -> list[str]:
    """Problems between two folders of parquet tables (empty: the same within `atol`)."""
    compare_frames = _same_tables().compare_frames  # type: ignore[attr-defined]
    names_a, names_b = {p.name for p in a.glob("*.parquet")}, {p.name for p in b.glob("*.parquet")}
    problems = [f"{n}: only in {a.name}" for n in sorted(names_a - names_b)]
    problems += [f"{n}: only in {b.name}" for n in sorted(names_b - names_a)]
    for name in sorted(names_a & names_b):
        frames = pd.read_parquet(a / name), pd.read_parquet(b / name)
        problems += [f"{name.removesuffix('.parquet')}.{p}" for p in compare_frames(*frames, atol)]
    return problems


def run_one(yaml: str, sets: dict[str, str], runs: Path, extra: dict[str, str]) -> tuple[Path | None, str]:
    """Run one experiment into the store `runs`: (its tables folder or None, error tail)."""
    cmd = [sys.executable, "-m", "interp.cli", "run", str(ROOT / "experiments" / yaml), "--runs-dir", str(runs),
           "--quiet"]
    for k, v in {**sets, **extra}.items():
        cmd += ["--set", f"{k}={v}"]
    before = set(runs.iterdir()) if runs.exists() else set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=runs.parent)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit {proc.returncode}"
    (run_dir,) = set(runs.iterdir()) - before
    return run_dir / "tables", ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="experiment names (tools/same_tables.py's)")
    p.add_argument("--device-map", action="store_true", help="also run the text experiments with device_map=auto")
    p.add_argument("--atol", type=float, default=ATOL)
    p.add_argument("--device", default="cuda", help="the device compared with the CPU (default: cuda; 'cpu' "
                   "runs the comparison machinery without a GPU)")
    args = p.parse_args(argv)
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU here; nothing to compare (run this on a GPU machine)")
        return 0
    gpus = "no GPU"
    if torch.cuda.is_available():
        gpus = f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
    print(f"gpu_smoke: {args.device} vs cpu, {gpus}; atol {args.atol:g}")
    settings = [s for s in _same_tables().SETTINGS if not args.only or s[0] in args.only]  # type: ignore[attr-defined]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = {label: Path(tmp) / label / "runs" for label in ("cpu", "device", "device_map")}
        for store in runs.values():
            store.parent.mkdir(parents=True, exist_ok=True)
        for name, yaml, sets in settings:
            bad += check_one(name, yaml, sets, runs, args)
    print(f"gpu_smoke: {len(settings) - bad} of {len(settings)} experiments agree")
    return 1 if bad else 0


def check_one(name: str, yaml: str, sets: dict[str, str], runs: dict[str, Path], args: argparse.Namespace) -> bool:
    """Run one experiment on the CPU and on the device (and with a device map); print its line.
    True when anything failed or differs."""
    t0 = time.perf_counter()
    overrides = {"device": {"model.device": args.device}}
    if args.device_map and name not in NO_DEVICE_MAP:
        overrides["device_map"] = {"model.device_map": "auto"}
    base, err = run_one(yaml, sets, runs["cpu"], {"model.device": "cpu"})
    done = {label: run_one(yaml, sets, runs[label], extra) for label, extra in overrides.items()}
    failed = [f"cpu: {err}"] if base is None else []
    failed += [f"{label}: {e}" for label, (t, e) in done.items() if t is None]
    problems = failed or [f"{label} ({args.device if label == 'device' else 'auto'}) vs cpu: {q}"
                          for label, (t, _) in done.items()
                          for q in compare_tables(base, t, args.atol)]  # type: ignore[arg-type]
    status = "FAILED" if failed else ("DIFFERENT" if problems else "same")
    n = len(list(base.glob("*.parquet"))) if base is not None else 0
    vs = " and ".join(args.device if label == "device" else "device_map=auto" for label in done)
    print(f"{name}: {status}: {n} tables, cpu vs {vs} ({time.perf_counter() - t0:.0f} s)")
    for q in problems[:10]:
        print(f"  {q}")
    return bool(problems)


if __name__ == "__main__":
    raise SystemExit(main())
