"""Command line: `interp run | validate | models | runs`.

    interp run experiments/ioi.yaml --set data.n_prompts=8
    interp validate experiments/ioi.yaml
    interp models
    interp runs

Thin by design: parse, call the library, print. Errors the user can fix (bad YAML, bad data,
unknown model) print one clear message and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys

from interp.core.errors import InterpError


def _load(args) -> object:
    from interp.io.config import load_config, parse_set_args, with_overrides

    cfg = load_config(args.config)
    if args.set:
        cfg = with_overrides(cfg, parse_set_args(args.set))
    return cfg


def cmd_run(args) -> int:
    from interp.io.runner import run_experiment

    cfg = _load(args)
    run_experiment(cfg, config_path=args.config, runs_dir=args.runs_dir, show_progress=not args.quiet)
    return 0


def cmd_validate(args) -> int:
    cfg = _load(args)
    print(f"{args.config}: ok (experiment {cfg.name!r}, model {cfg.model.name}, data {cfg.data.source})")
    return 0


def cmd_models(args) -> int:
    from interp.models import smollm2
    from interp.models.registry import BUNDLED, TINY

    rows = []
    for name, desc in BUNDLED.items():
        present = smollm2.weights_present()
        rows.append((name, "bundled", "present" if present else f"missing ({smollm2.INSTALL_HINT})", desc))
    for name, desc in TINY.items():
        rows.append((name, "tiny", "built on demand (needs the bundled tokenizer)", desc))
    width = max(len(r[0]) for r in rows)
    for name, kind, status, desc in rows:
        print(f"{name:<{width}}  {kind:<8} {status}\n{'':<{width}}  {desc}")
    print("\nAlso accepted: a Hugging Face hub id ('org/name', needs a reachable hub) or a local HF directory.")
    return 0


def cmd_runs(args) -> int:
    from interp.io.runstore import RunStore

    df = RunStore(args.runs_dir).list_runs()
    if df.empty:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(df[["run_id", "experiment", "model", "created", "status"]].to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability workbench")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an experiment YAML")
    r.add_argument("config")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    r.add_argument("--runs-dir", default=None, help="run store directory (default: output.runs_dir)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)

    v = sub.add_parser("validate", help="check an experiment YAML without running it")
    v.add_argument("config")
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    v.set_defaults(fn=cmd_validate)

    m = sub.add_parser("models", help="list known models and whether their weights are present")
    m.set_defaults(fn=cmd_models)

    s = sub.add_parser("runs", help="list runs in the run store")
    s.add_argument("--runs-dir", default="runs")
    s.set_defaults(fn=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
