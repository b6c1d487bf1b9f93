"""Honest run states (issue 14): SIGTERM / SIGINT mark a supervised run `interrupted` and exit
143 / 130; a SIGKILLed run (pid gone) or one with a stale heartbeat shows as `interrupted`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from interp.io.lifecycle import RunInterrupted, supervised
from interp.io.runstate import HEARTBEAT, STATUSES, effective_status
from interp.io.runstore import Run, RunStore, build_manifest

REPO = Path(__file__).resolve().parents[2]

# A run that writes one table, says "ready", then works (sleeps) inside `supervised`; the
# CLI's way of ending on RunInterrupted (one line, its exit code) is `interp.cli.run_guarded`.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from interp.cli import run_guarded
    from interp.io.lifecycle import supervised
    from interp.io.runstore import RunStore, build_manifest

    def body():
        run = RunStore(sys.argv[1]).create("sleepy")
        run.write_manifest(build_manifest({"name": "sleepy"}, model_id="m", weights_sha256=None, seed=0))
        with supervised(run, interval=float(sys.argv[2])):
            run.write_table("done_first", pd.DataFrame({"x": [1]}))
            print("ready", flush=True)
            time.sleep(60)
        return 0

    sys.exit(run_guarded(body))
    """
)


def _start(tmp_path: Path, interval: float = 10.0) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "runs"), str(interval)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    (run_dir,) = (tmp_path / "runs").iterdir()
    return proc, run_dir


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.integration  # a Python subprocess that imports interp and is signalled
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_marks_interrupted_and_exits(tmp_path, sig, code):
    proc, run_dir = _start(tmp_path)
    manifest = _manifest(run_dir)
    assert manifest["pid"] == proc.pid and manifest["hostname"] == socket.gethostname()
    assert (run_dir / HEARTBEAT).is_file()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert signal.Signals(sig).name in err and "interrupted" in err
    manifest = _manifest(run_dir)
    assert manifest["status"] == "interrupted" and manifest["finished_at"]
    assert manifest["error"] == f"interrupted by {signal.Signals(sig).name}"
    assert (run_dir / "tables" / "done_first.parquet").is_file()  # finished tables kept


@pytest.mark.integration  # a Python subprocess that imports interp and is killed
def test_sigkill_shows_as_interrupted_in_interp_runs(tmp_path, capsys):
    from interp.cli import main

    proc, run_dir = _start(tmp_path)
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert " running" in capsys.readouterr().out  # alive: still running
    proc.kill()
    proc.wait(timeout=30)
    assert _manifest(run_dir)["status"] == "running"  # nothing could update it...
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and " running" not in out  # ...but the pid is gone


def test_heartbeat_is_rewritten(tmp_path):
    proc, run_dir = _start(tmp_path, interval=0.2)
    try:
        first = (run_dir / HEARTBEAT).stat().st_mtime_ns
        deadline = time.time() + 10
        while (run_dir / HEARTBEAT).stat().st_mtime_ns == first and time.time() < deadline:
            time.sleep(0.05)
        assert (run_dir / HEARTBEAT).stat().st_mtime_ns != first
        assert "pid" in (run_dir / HEARTBEAT).read_text()
    finally:
        proc.kill()
        proc.wait()


def _running_run(tmp_path: Path, **fields) -> Run:
    run = RunStore(tmp_path / "runs").create("r")
    run.write_manifest(build_manifest({"name": "r"}, model_id="m", weights_sha256=None, seed=0) | fields)
    return run


def test_stale_heartbeat_is_interrupted(tmp_path):
    run = _running_run(tmp_path, pid=os.getpid())  # this process: alive
    assert effective_status(run.path, run.read_manifest()) == "running"
    (run.path / HEARTBEAT).write_text("x")
    assert effective_status(run.path, run.read_manifest()) == "running"
    old = time.time() - 61
    os.utime(run.path / HEARTBEAT, (old, old))
    assert effective_status(run.path, run.read_manifest()) == "interrupted"
    assert RunStore(tmp_path / "runs").list_runs()["status"].tolist() == ["interrupted"]


def test_other_host_pid_is_not_checked(tmp_path):
    run = _running_run(tmp_path, pid=2**22 + 12345, hostname="elsewhere")
    assert effective_status(run.path, run.read_manifest()) == "running"
    run.update_manifest(hostname=socket.gethostname())
    assert effective_status(run.path, run.read_manifest()) == "interrupted"


def test_in_process_interrupt_restores_handlers(tmp_path):
    run = _running_run(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as info, supervised(run, interval=60):
        run.write_table("t", pd.DataFrame({"x": [1]}))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    assert run.read_manifest()["status"] == "interrupted" and "interrupted" in STATUSES


def test_normal_exit_leaves_status_alone(tmp_path):
    run = _running_run(tmp_path)
    with supervised(run, interval=60):
        pass
    run.mark("complete")
    assert run.status() == "complete"


def test_heartbeat_does_not_race_the_manifest(tmp_path):
    run = _running_run(tmp_path)
    with supervised(run, interval=0.001):
        for i in range(200):
            run.update_manifest(step=i)
            assert run.read_manifest()["step"] == i
    assert json.loads(run.manifest_path.read_text())["pid"] == os.getpid()
