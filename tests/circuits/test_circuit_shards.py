"""The circuit kind's path-patching sweeps run as stored shards (one store per sweep,
`shards/circuit_<map>`), so an interrupted circuit run resumes without recomputing them and gives
the tables of an uninterrupted run."""

import json
import shutil

import pandas as pd
import pytest

from interp.io.config import parse_config
from interp.io.runner import run_experiment
from interp.io.runstore import Run

pytestmark = pytest.mark.integration  # two small experiment runs


def _tables(run: Run) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((run.path / "tables").glob("*.parquet"))}


def test_circuit_sweeps_are_stored_shards_and_a_resumed_run_reuses_them(tmp_path):
    cfg = parse_config({"kind": "circuit", "name": "c", "model": {"name": "tiny-llama"},
                        "data": {"n_prompts": 2, "templates": [0]}, "output": {"runs_dir": str(tmp_path / "runs")}})
    run = run_experiment(cfg, show_progress=False, log=lambda _: None)
    stores = sorted(p.name for p in (run.path / "shards").iterdir())
    assert "circuit_to_logits" in stores and all(s.startswith("circuit_") for s in stores)
    files = sorted((run.path / "shards").rglob("*.pt"))
    done = run.read_manifest()["shards_done"]  # step -> the keys of its finished shards
    assert sorted(done) == stores and sum(len(keys) for keys in done.values()) == len(files)

    # the same run, interrupted after its sweeps: half its shard files and all its tables gone
    copy = Run(tmp_path / "copy")
    shutil.copytree(run.path, copy.path)
    manifest = json.loads((copy.path / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (copy.path / "manifest.json").write_text(json.dumps(manifest))
    kept = sorted((copy.path / "shards").rglob("*.pt"))
    for f in kept[::2]:
        f.unlink()
    shutil.rmtree(copy.path / "tables")
    lines: list[str] = []
    resumed = run_experiment(cfg, show_progress=False, log=lines.append, resume=copy)
    assert resumed.read_manifest()["status"] == "complete"
    assert any("shards reused" in line for line in lines)
    before, after = _tables(run), _tables(resumed)
    assert before.keys() == after.keys()
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name], check_exact=True, obj=name)
