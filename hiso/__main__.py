"""Command line:
    python -m hiso run --config FILE [--set key=value ...] [--out DIR] [--hub-mirror DIR]
    python -m hiso choose-lr ...        the workflow's step-size choice of a tuned method
    python -m hiso scan-lr ...          the same choice by an extending scan (hiso/scan.py)
    python -m hiso fetch --configfile TIER --to DIR     every planned hub model and data set into a mirror
    python -m hiso fixtures --to DIR    a mirror of small data sets in the hub's schemas (rehearsals, tests)
    python -m hiso progress RESULTS [--metric M] [--only PATTERN] [--tier YAML...]   where a tier's runs stand (hiso/progress.py)

Exit codes of `run`: 0 complete (or diverged with --allow-diverged); 2 refused before compute (a bad config
key or value, an output folder held by another run, unwritable, or holding another config); 3 diverged or
failed; 4 a model or data set unavailable; 5 an output could not be written (e.g. a full disk: the run resumes).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"] and os.environ.get("HISO_WARM_SOCKET"):  # a workflow's warm runner (hiso/warm.py)
        from .warmwire import client
        code = client(argv)
        if code is not None:
            return code
    return _main(argv)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP (a scheduler's kill, a closed terminal) raise SystemExit(128 + signal) like SIGINT's
    KeyboardInterrupt, so a write in progress removes its temp file (hiso/io.py) before the process ends."""
    def handler(signum, _frame):
        # once: a storm of signals must not interrupt the clean-up the first one started (nor interpreter
        # shutdown, where Python prints "Exception ignored in threading._shutdown"); SIGKILL still ends it
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    # a process started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: restore it, so SIGINT cleans up there too
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _main(argv: list[str]) -> int:
    from .config import ConfigError, load_config
    from .models import ModelUnavailable
    from .run import RunFailed, run
    from .rundir import OutputError, RunDirError
    from .tasks.text import DataUnavailable

    ap = argparse.ArgumentParser(prog="python -m hiso", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) one configuration")
    r.add_argument("--config", required=True, help="YAML config file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set federation.lr=1e-3 (repeatable)")
    r.add_argument("--set-file", action="append", default=[], metavar="FILE",
                   help="a JSON/YAML file whose 'sets' mapping holds more KEY: VALUE overrides (applied before "
                        "--set), e.g. the step size a tuning job chose")
    r.add_argument("--out", default=None, help="output folder (default results/runs/<name>)")
    r.add_argument("--replace-different", action="store_true",
                   help="if --out holds a run of another config, replace it instead of refusing")
    r.add_argument("--wait-lock", action="store_true",
                   help="if another process is writing --out, wait for it instead of refusing (the workflow's jobs)")
    r.add_argument("--restart", action="store_true",
                   help="discard the folder's state (checkpoints, metrics, run.json) and start again at round 0")
    r.add_argument("--allow-diverged", action="store_true",
                   help="exit 0 when the run diverges (its metrics and run.json record it): a diverged run is a "
                        "result of a sweep, not a failure of the workflow")
    r.add_argument("--gpu-slot", action="store_true",
                   help="claim one free GPU for this run: of $HISO_GPUS, else of $CUDA_VISIBLE_DEVICES, else of "
                        "the machine's (hiso/gpu_slot.py)")
    r.add_argument("--hub-mirror", default=None, metavar="DIR",
                   help="load hub models and data sets from this mirror only (hiso/hub.py; default $HISO_HUB_MIRROR)")
    f = sub.add_parser("fetch", help="download every hub model and data set a workflow tier plans into a mirror")
    f.add_argument("--configfile", required=True, help="the tier config, e.g. workflows/config/paper.yaml")
    f.add_argument("--to", required=True, help="the mirror folder to fill")
    f.add_argument("--lock", default=None, help="a hub-lock.json whose commits to fetch (default: main's head)")
    f.add_argument("--from", dest="source", default=None, help="copy from another mirror instead of the hub")
    f.add_argument("--dry-run", action="store_true", help="list what would be fetched")
    x = sub.add_parser("fixtures", help="write small hub-schema data sets into a mirror (offline rehearsals)")
    x.add_argument("--to", required=True)
    c = sub.add_parser("choose-lr", help="pick a tuned method's step size from its grid's tuning runs")
    c.add_argument("--metrics", nargs="+", required=True, help="the grid's metrics.csv, one per step size")
    c.add_argument("--metric", required=True)
    c.add_argument("--target", type=float, required=True)
    c.add_argument("--out", required=True, help="JSON file: the choice ('sets') and every grid point")
    s = sub.add_parser("scan-lr", help="tune a method's step size by scanning, extending past a grid edge (hiso/scan.py)")
    s.add_argument("--config", required=True, help="the experiment's base YAML")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the method's config overrides")
    s.add_argument("--method", required=True, help="the method's name in the experiment (run folders <name>@<lr>)")
    s.add_argument("--grid", nargs="+", type=float, required=True, help="the starting grid of step sizes")
    seeds = s.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seed", type=int, help="the tuning seed (never a reported one)")
    seeds.add_argument("--seeds", type=int, nargs="+", help="the full-grid protocol: every point on each of these "
                       "tuning seeds, scored by the mean of the last dev evaluations (hiso/scan.py: scan_grid)")
    s.add_argument("--criterion", choices=["last", "best"], default="last", help="with --seeds: a seed scores its "
                   "last dev evaluations (default) or its best one (early stopping)")
    s.add_argument("--metric", required=True)
    s.add_argument("--target", type=float, required=True)
    s.add_argument("--root", required=True, help="folder of the tried points' run folders")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--hold", action="store_true", help="a point reaches the target only where it stays there "
                   "to the end of the budget (hiso/scan.py)")
    s.add_argument("--out", required=True, help="JSON file: the choice ('sets') and every tried point")
    s.add_argument("--hub-mirror", default=None, metavar="DIR", help="as for run")
    g = sub.add_parser("progress", help="where a tier's runs stand: state, rounds, metric, CPU time (hiso/progress.py)")
    g.add_argument("results", help="a tier's results folder (its runs/ folder is read)")
    g.add_argument("--metric", default="test_loss", help="the metric column to show (default test_loss)")
    g.add_argument("--only", default=None, help="runs whose <exp>/<method>/seed<k> matches this shell pattern")
    g.add_argument("--tier", nargs="+", default=None, metavar="YAML", help="the tier's config files, as given to "
                   "snakemake --configfile: its planned runs without a folder are listed as not started, and the "
                   "CPU time left is estimated")
    g.add_argument("--methods", nargs="+", default=None, metavar="PATTERN", help="with --tier: the methods slice, "
                   "as --config 'methods=[...]'")
    g.add_argument("--like", default=None, metavar="DIR", help="with --tier on a study tier: a published page of it "
                   "(e.g. docs/results/curvature), whose own seconds time the jobs left")
    args = ap.parse_args(argv)
    if args.cmd == "progress":
        from .progress import higher_is_better, published_study, report
        if not any((Path(args.results) / sub).is_dir() for sub in ("runs", "study")):
            print(f"progress: {args.results}: no runs/ or study/ folder (give a tier's results folder)",
                  file=sys.stderr)
            return 2
        try:
            higher_is_better(args.metric)
        except ValueError as e:
            print(f"progress: {e}", file=sys.stderr)
            return 2
        plan = study_plan = None
        if args.tier:
            from .progress import planned, study_planned
            try:
                plan = planned(args.tier, args.methods)
                study_plan = study_planned(args.tier)
            except (OSError, ValueError) as e:  # a tier file that is missing or does not plan
                print(f"progress: --tier {' '.join(args.tier)}: {e}", file=sys.stderr)
                return 2
        like = Path(args.like) if args.like else None
        if like is not None and not published_study(like):
            print(f"progress: --like {like}: not a published study page (no eval.csv and tuning.csv there)",
                  file=sys.stderr)
            return 2
        print(report(Path(args.results), args.metric, args.only, plan, study_plan, like))
        return 0
    if args.cmd == "choose-lr":
        from .scan import choose_lr
        from .tuning import write_json
        choice = choose_lr(args.metrics, args.metric, args.target)
        write_json(Path(args.out), choice)
        print(f"chose {choice['method']}" + (" (at the grid's edge: widen the grid)" if choice["at_grid_edge"] else ""))
        return 0
    if args.cmd == "scan-lr":
        from .config import ConfigError
        from .scan import scan, scan_grid
        from .tuning import write_json
        if args.hub_mirror:
            from .hub import MIRROR_ENV
            os.environ[MIRROR_ENV] = str(Path(args.hub_mirror).resolve())
        exit_on_signals()
        try:
            if args.seeds:
                choice = scan_grid(args.config, args.set, args.method, args.grid, args.seeds, args.metric, args.root,
                                   threads=args.threads, criterion=args.criterion)
            else:
                choice = scan(args.config, args.set, args.method, args.grid, args.seed, args.metric, args.target,
                              args.root, threads=args.threads, hold=args.hold)
        except ConfigError as e:  # refused before compute
            print(f"config error: {e}", file=sys.stderr)
            return 2
        write_json(Path(args.out), choice)
        print(f"chose {choice['method']}" + (" (still at an edge after extending)" if choice["at_grid_edge"] else ""))
        return 0
    if args.cmd == "fetch":
        return _fetch(args)
    if args.cmd == "fixtures":
        from .tasks.fixtures import write_mirror
        paths = write_mirror(Path(args.to))
        print(f"{len(paths)} fixture data sets in {args.to}")
        return 0
    if args.hub_mirror:
        from .hub import MIRROR_ENV
        os.environ[MIRROR_ENV] = str(Path(args.hub_mirror).resolve())
    if args.gpu_slot:
        from .gpu_slot import claim
        try:
            claim()
        except RuntimeError as e:
            print(f"gpu slot: {e}", file=sys.stderr)
            return 2
    from .numerics import NumericsError, mode
    try:
        mode()
    except NumericsError as e:
        print(f"numerics: {e}", file=sys.stderr)
        return 2
    exit_on_signals()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hiso.run").setLevel(logging.INFO)  # one line per evaluation in every run log
    try:
        from .config import check_sets
        check_sets(args.set)
        cfg = load_config(args.config, [*_file_sets(args.set_file), *args.set])
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("results/runs") / cfg.name
    try:
        res = run(cfg, out, replace_different=args.replace_different, restart=args.restart,
                  wait_lock=args.wait_lock)
    except RunDirError as e:
        print(f"run {cfg.name}: {e}", file=sys.stderr)
        return 2
    except OutputError as e:
        print(f"run {cfg.name}: {e}", file=sys.stderr)
        return 5
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


def _fetch(args) -> int:
    import json

    from .config import ConfigError
    from .hub import fetch
    from .plan import planned_sources
    try:
        models, data = planned_sources(args.configfile)
    except (OSError, ValueError, ConfigError) as e:
        print(f"fetch: {args.configfile}: {e}", file=sys.stderr)
        return 2
    print(f"{args.configfile}: {len(models)} hub models, {len(data)} hub data sets")
    if args.dry_run:
        for m in models:
            print(f"  model {m}")
        for repo, name in data:
            print(f"  data {repo}/{name or 'default'}")
        return 0
    try:
        lock = json.loads(Path(args.lock).read_text()) if args.lock else None
        fetch(models, data, Path(args.to), Path(args.source) if args.source else None, lock)
    except Exception as e:  # noqa: BLE001 - MirrorMissing, and the many types the hub clients raise offline
        print(f"fetch: {type(e).__name__}: {e}", file=sys.stderr)
        return 4
    return 0


def _file_sets(paths: list[str]) -> list[str]:
    """KEY=VALUE assignments from --set-file files (their 'sets' mapping; values as JSON, which YAML reads)."""
    import json

    from .config import ConfigError, load_yaml
    out = []
    for path in paths:
        try:
            data = load_yaml(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--set-file {path}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
            raise ConfigError(f"--set-file {path}: expected a mapping with a 'sets' mapping of dotted keys")
        out += [f"{k}={json.dumps(v)}" for k, v in data["sets"].items()]
    return out


if __name__ == "__main__":
    sys.exit(main())
