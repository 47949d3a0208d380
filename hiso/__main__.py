"""Command line: `python -m hiso run --config FILE [--set key=value ...] [--out DIR]`."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .models import ModelUnavailable
from .run import RunFailed, run
from .tasks.text import DataUnavailable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hiso", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) one configuration")
    r.add_argument("--config", required=True, help="YAML config file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set federation.lr=1e-3 (repeatable)")
    r.add_argument("--out", default=None, help="output folder (default results/runs/<name>)")
    r.add_argument("--replace-different", action="store_true",
                   help="if --out holds a run of another config, replace it instead of refusing")
    r.add_argument("--allow-diverged", action="store_true",
                   help="exit 0 when the run diverges (its metrics and run.json record it): a diverged run is a "
                        "result of a sweep, not a failure of the workflow")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("results/runs") / cfg.name
    try:
        res = run(cfg, out, replace_different=args.replace_different)
    except (ModelUnavailable, DataUnavailable) as e:
        print(f"run {cfg.name}: {e}", file=sys.stderr)
        return 4
    except RunFailed as e:
        print(f"run {cfg.name} {e.status}: {e.message} (see {out / 'run.json'})", file=sys.stderr)
        return 0 if (e.status == "diverged" and args.allow_diverged) else 3
    last = res.metrics.iloc[-1].to_dict()
    print(f"run {cfg.name}: {res.status}, {len(res.metrics)} rounds -> {out}")
    print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
