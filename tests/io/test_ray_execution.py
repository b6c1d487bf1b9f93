"""Ray as the execution engine and runs that survive (issue 15), on a real local Ray instance
with 2 CPUs: the same tables as local execution, a worker killed mid-sweep, a run SIGKILLed
mid-sweep and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from interp.io.config import load_config, with_overrides
from interp.io.runner import run_experiment
from interp.io.runstore import Run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IOI = REPO / "experiments" / "ioi.yaml"
# The sharded analyses only (DLA, accuracy and head patterns run in the driver either way).
SMALL = {"data.n_prompts": "6", "data.position_n_prompts": "3", "analyses.accuracy.enabled": "false",
         "analyses.dla.enabled": "false", "analyses.head_patterns.enabled": "false"}
RAY2 = {"execution.backend": "ray", "execution.workers": "2"}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module (the runner joins it and leaves it running)."""
    ray = pytest.importorskip("ray")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _cfg(tmp_path: Path, model: str = "tiny-llama", **sets: str):
    return with_overrides(load_config(IOI), {"model.name": model, "output.runs_dir": str(tmp_path), **SMALL, **sets})


def assert_same_tables(a: Run, b: Run) -> None:
    """Non-float columns equal, floats within 1e-6 (the issue's bar; locally they are equal)."""
    assert a.tables() == b.tables()
    for name in a.tables():
        pd.testing.assert_frame_equal(a.read_table(name), b.read_table(name), check_exact=False, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("model", "sets"), [("tiny-llama", {}),
                                             ("smollm2-135m", {"data.n_prompts": "2", "data.position_n_prompts": "1"})])
def test_ray_tables_equal_local(tmp_path, ray_cluster, model, sets):
    local = run_experiment(_cfg(tmp_path, model, **sets), show_progress=False, log=lambda _: None)
    ray_run = run_experiment(_cfg(tmp_path, model, **sets, **RAY2), show_progress=False, log=lambda _: None)
    assert_same_tables(local, ray_run)
    done = ray_run.read_manifest()["shards_done"]
    assert set(done) == {"head_patching", "residual_patching"}
    assert len(list((ray_run.path / "shards").glob("*/*.pt"))) == sum(len(v) for v in done.values())


def test_a_killed_worker_has_its_shards_rerun(tmp_path, ray_cluster, monkeypatch):
    from interp.io import execution

    killed: list[str] = []
    save = execution.ShardStore.save

    def save_then_kill(self, key, result):  # after the first finished shard, kill a worker
        path = save(self, key, result)
        if not killed:
            name = next(a["name"] for a in ray_cluster.util.list_named_actors(all_namespaces=True)
                        if a["name"].startswith("interp-worker-"))
            ray_cluster.kill(_actor(ray_cluster, name))
            killed.append(name)
        return path

    monkeypatch.setattr(execution.ShardStore, "save", save_then_kill)
    logs: list[str] = []
    ray_run = run_experiment(_cfg(tmp_path, **RAY2), show_progress=False, log=logs.append)
    monkeypatch.undo()
    assert killed and any("a worker died during shard" in line for line in logs), logs
    assert ray_run.read_manifest()["status"] == "complete"
    assert_same_tables(run_experiment(_cfg(tmp_path), show_progress=False, log=lambda _: None), ray_run)


def _actor(ray, name):
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"] == name:
            return ray.get_actor(name, namespace=a["namespace"])
    raise AssertionError(f"no actor {name}")


def _shard_files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (run_dir / "shards").glob("*/*.pt")}


def test_sigkilled_run_resumes_with_identical_tables(tmp_path):
    """SIGKILL after some shard files exist; `--resume RUN_DIR` recomputes only the missing ones
    (the finished files are not rewritten) and the tables equal an uninterrupted run's."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sets = [f"--set={k}={v}" for k, v in {"model.name": "tiny-llama", **SMALL, "data.n_prompts": "30"}.items()]
    cmd = [sys.executable, "-m", "interp.cli", "run", str(IOI), *sets, "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    run_dir = None
    while time.time() < deadline and proc.poll() is None:
        dirs = list((tmp_path / "runs").glob("ioi-*"))
        if dirs and len(list((dirs[0] / "shards").glob("*/*.pt"))) >= 3:
            run_dir = dirs[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert run_dir is not None, f"the run ended before any shard was written: {proc.stdout.read()}"
    before = _shard_files(run_dir)
    assert Run(run_dir).status() == "interrupted"

    resumed = subprocess.run([sys.executable, "-m", "interp.cli", "run", "--resume", str(run_dir), "--quiet"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _shard_files(run_dir)
    assert {k: after[k] for k in before} == before  # finished shards were reused, not recomputed
    reused = [line for line in resumed.stdout.splitlines() if "shards reused" in line]
    assert reused and all(line.startswith(("head_patching: ", "residual_patching: ")) for line in reused)
    assert sum(int(line.split(": ")[1].split(" of ")[0]) for line in reused) == len(before)
    manifest = Run(run_dir).read_manifest()
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1
    assert manifest["resumes"][0]["previous_status"] == "interrupted"

    cfg = with_overrides(load_config(IOI), {"model.name": "tiny-llama", **SMALL, "data.n_prompts": "30",
                                            "output.runs_dir": str(tmp_path / "fresh")})
    assert_same_tables(run_experiment(cfg, show_progress=False, log=lambda _: None), Run(run_dir))

    again = subprocess.run([sys.executable, "-m", "interp.cli", "run", "--resume", str(run_dir)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "is complete; there is nothing to resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
