"""Does today's code still compute a page's runs?  Reruns the first rounds of archived runs and compares them bit
for bit with what the page holds.

A tier that runs for days is computed across several commits (its runs record theirs in run.json's segments) and
its page is built at the last one.  This is the check that the runs agree with the code at the page's commit: for
each run it picks (by default one per code version and method: every distinct list of commits a run was computed
at, times every method and curvature kind), it loads the run's recorded config, confirms that the config still
hashes to the recorded config_hash, runs the first ROUNDS rounds in a temporary folder, and compares

- the initial evaluation (run.json's initial_eval: every metric on the fixed test and dev sets, a forward check), and
- rounds 1..ROUNDS of metrics.csv: train_loss, the byte counts, forward passes, accepted and rejected clients (a
  round's train loss is measured on the model the earlier rounds made, so the whole update path is checked),

as their CSV text, measured times aside.  Evaluations are not compared: the short run evaluates at its last round.

    .venv/bin/python workflows/scripts/verify_runs.py docs/results/lm                  # a page's runs
    .venv/bin/python workflows/scripts/verify_runs.py docs/results/lm/saved --all --rounds 2

Exit 0: every checked run agrees; 1: a run differs (each difference named: run, round, column, committed, now); 2:
the folder holds no runs.  A run that claims no bit-identity across CPUs (run.json numerics) is checked the same way
and marked, since a difference there may be the CPU's.  The CPU numerics are pinned by importing hiso before NumPy
or torch (hiso/numerics.py), as in every entry point.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import hiso  # noqa: F401  pins the CPU numerics before NumPy (pandas, below) or torch load

COMPARED = ("train_loss", "bytes_up", "bytes_up_scalars", "bytes_down", "bytes_down_seeds", "bytes_down_catchup",
            "forward_passes", "rejected", "accepted")


def runs(folder: Path) -> list[Path]:
    """Every finished run under the folder (a run.json beside a metrics.csv)."""
    return sorted(p.parent for p in folder.rglob("run.json") if (p.parent / "metrics.csv").is_file())


def kind(run: Path) -> tuple:
    """What a run is, for picking one of each: the commits it was computed at, its method and curvature kind."""
    info = json.loads((run / "run.json").read_text())
    commits = tuple(dict.fromkeys(s.get("git_sha", "") for s in info.get("segments", [])))
    return commits, info["config"]["method"], info["config"].get("curvature", {}).get("kind")


def pick(found: list[Path], every: bool) -> list[Path]:
    if every:
        return found
    first: dict[tuple, Path] = {}
    for run in found:
        first.setdefault(kind(run), run)
    return list(first.values())


def check(run: Path, rounds: int) -> list[str]:
    """The differences between an archived run and its first `rounds` rounds rerun now (empty: it agrees)."""
    import pandas as pd

    from hiso.config import load_config
    from hiso.run import run as run_config
    info = json.loads((run / "run.json").read_text())
    cfg = load_config(data=info["config"])
    if cfg.hash() != info["config_hash"]:
        return [f"{run}: its config hashes to {cfg.hash()} now, {info['config_hash']} recorded (the config schema "
                "changed: the run cannot be rerun as it was)"]
    old = pd.read_csv(run / "metrics.csv", dtype=str, keep_default_na=False)
    n = min(rounds, len(old))
    cfg = load_config(data=info["config"], overrides=[f"federation.rounds={n}"])
    with tempfile.TemporaryDirectory() as tmp:
        run_config(cfg, Path(tmp) / "run")
        new = pd.read_csv(Path(tmp) / "run" / "metrics.csv", dtype=str, keep_default_na=False)
        again = json.loads((Path(tmp) / "run" / "run.json").read_text())
    out = [f"{run}: initial evaluation {k}: {v!r} recorded, {again['initial_eval'].get(k)!r} now"
           for k, v in (info.get("initial_eval") or {}).items() if again["initial_eval"].get(k) != v]
    for col in (c for c in COMPARED if c in old.columns):
        for i in range(n):
            if new[col][i] != old[col][i]:
                out.append(f"{run}: round {old['round'][i]} {col}: {old[col][i]} recorded, {new[col][i]} now")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a page's folder (docs/results/<page>) or a saved folder")
    ap.add_argument("--rounds", type=int, default=3, help="rounds rerun per run (default 3)")
    ap.add_argument("--all", action="store_true", help="every run, not one per code version and method")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        print(f"verify_runs: --rounds {a.rounds}: at least 1 round", file=sys.stderr)
        return 2
    found = runs(a.folder)
    if not found:
        print(f"verify_runs: {a.folder} holds no finished run (run.json beside metrics.csv)", file=sys.stderr)
        return 2
    chosen = pick(found, a.all)
    bad = 0
    for run in chosen:
        commits, method, curvature = kind(run)
        portable = json.loads((run / "run.json").read_text()).get("numerics", {}).get("bit_identical_across_cpus")
        diffs = check(run, a.rounds)
        mark = "" if portable else " (its numerics claim no bit-identity across CPUs)"
        at = ", ".join(c[:10] for c in commits)
        print(f"{'agrees' if not diffs else 'DIFFERS'}: {run.relative_to(a.folder)} ({method}, curvature {curvature}, "
              f"computed at {at}){mark}")
        for d in diffs:
            print(f"  {d}")
        bad += bool(diffs)
    print(f"{len(chosen)} of {len(found)} run(s) rerun for {a.rounds} round(s): {len(chosen) - bad} agree, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
