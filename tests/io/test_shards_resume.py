"""Runs that survive (issue 15): shard results are written atomically into the run and reused;
`--resume` refuses, in one line, what it cannot continue."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from interp.core.execution import LocalExecutor, Shard
from interp.io.config import load_config, with_overrides
from interp.io.execution import ShardStore, StoredExecutor
from interp.io.resume import ResumeError, config_differences, find_resumable, resolve_resume, resume_target
from interp.io.runstore import Run, RunStore, build_manifest

IOI = Path(__file__).resolve().parents[2] / "experiments" / "ioi.yaml"


def _run(root, name="ioi", status="interrupted", config=None) -> Run:
    run = RunStore(root).create(name)
    manifest = build_manifest(config or {"name": name}, model_id="m", weights_sha256=None, seed=0,
                              extra={"kind": "patching"})
    run.write_manifest(manifest | {"status": status, "pid": None})
    return run


def _square(_model, payload):
    return torch.tensor([payload * payload], dtype=torch.float32)


def test_shard_write_is_atomic(tmp_path, monkeypatch):
    """A shard file appears whole or not at all: a write that fails before the rename leaves no
    file under the shard's name (and no temporary file behind)."""
    store = ShardStore(_run(tmp_path), "head_patching")
    store.save("a", torch.arange(3.0))
    assert torch.equal(store.load("a"), torch.arange(3.0))

    def fail(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        store.save("b", torch.arange(5.0))
    assert store.load("b") is None
    assert sorted(p.name for p in store.dir.iterdir()) == ["a.pt"]
    assert store.run.read_manifest()["shards_done"] == {"head_patching": ["a"]}


def test_stored_executor_reuses_finished_shards(tmp_path):
    run = _run(tmp_path)
    shards = [Shard(f"s{i}", _square, i) for i in range(4)]
    logs: list[str] = []
    first = StoredExecutor(LocalExecutor(None), ShardStore(run, "step"), logs.append).map(shards[:2])
    assert [float(t) for t in first] == [0.0, 1.0]

    class Counting(LocalExecutor):
        ran: list[str] = []

        def map(self, shards, on_result=None):
            self.ran.extend(s.key for s in shards)
            return super().map(shards, on_result)

    inner = Counting(None)
    out = StoredExecutor(inner, ShardStore(run, "step"), logs.append).map(shards)
    assert [float(t) for t in out] == [0.0, 1.0, 4.0, 9.0]
    assert inner.ran == ["s2", "s3"]  # only the missing shards were computed
    assert logs == [f"step: 2 of 4 shards reused from {run.path / 'shards' / 'step'}; computing 2"]
    assert run.read_manifest()["shards_done"]["step"] == ["s0", "s1", "s2", "s3"]


def test_resume_refuses_a_complete_run(tmp_path):
    run = _run(tmp_path, status="complete")
    with pytest.raises(ResumeError, match="is complete; there is nothing to resume"):
        resume_target(run.path)


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ResumeError, match="is not an interp run"):
        resume_target(tmp_path / "x")
    with pytest.raises(ResumeError, match="is not a directory"):
        resume_target(tmp_path / "missing")
    other = RunStore(tmp_path).create("other")
    other.write_manifest({"status": "failed"})  # some other tool's run directory
    with pytest.raises(ResumeError, match="is not an interp experiment run"):
        resume_target(other.path)


def test_resume_refuses_a_run_of_another_config(tmp_path):
    base = load_config(IOI)
    cfg = with_overrides(base, {"output.runs_dir": str(tmp_path), "model.name": "tiny-llama"})
    run = _run(tmp_path, config=with_overrides(cfg, {"data.n_prompts": "3"}).to_dict())
    with pytest.raises(ResumeError, match=r"was made with a different config \(data.n_prompts differ\)"):
        find_resumable(cfg)
    with pytest.raises(ResumeError, match="different config"):
        resume_target(run.path, cfg)
    assert config_differences(cfg.to_dict(), with_overrides(cfg, {"execution.workers": "2"}).to_dict()) == []


def test_resume_picks_the_newest_unfinished_run_of_the_config(tmp_path):
    cfg = with_overrides(load_config(IOI), {"output.runs_dir": str(tmp_path)})
    _run(tmp_path, config=cfg.to_dict(), status="failed")
    newest = _run(tmp_path, config=cfg.to_dict())
    _run(tmp_path, config=cfg.to_dict(), status="complete")
    run, recorded = find_resumable(with_overrides(cfg, {"execution.backend": "ray"}))
    assert run.path == newest.path
    assert recorded.execution.backend == "ray" and recorded.data == cfg.data
    with pytest.raises(ResumeError, match="no interrupted or failed run named 'other'"):
        find_resumable(with_overrides(cfg, {"name": "other"}))


def test_resume_run_dir_takes_only_execution_overrides(tmp_path):
    cfg = with_overrides(load_config(IOI), {"output.runs_dir": str(tmp_path)})
    run = _run(tmp_path, config=cfg.to_dict())
    with pytest.raises(ResumeError, match="--set data.n_prompts cannot change it"):
        resolve_resume(str(run.path), None, {"data.n_prompts": "3"})
    recorded, got = resolve_resume(str(run.path), None, {"execution.workers": "2"})
    assert got.path == run.path and recorded.execution.workers == 2
    with pytest.raises(ResumeError, match="needs a run directory"):
        resolve_resume(True, None, {})
