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

A saved study (the curvature tier: <folder>/study, whose jobs write CSV rows, not run folders), or a published
study page (its eval.csv and tuning.csv, split into the jobs' outputs first), is checked by
rerunning, for every problem and method, its quickest finished evaluation (at most --max-seconds) exactly as the
workflow's study_eval job runs it, at the saved step-size choice, and comparing every column but `seconds`:

    .venv/bin/python workflows/scripts/verify_runs.py docs/results/curvature/saved \
        --tier workflows/config/curvature.yaml workflows/config/overlays/curvature-twins.yaml

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
    from hiso.run import RunFailed
    from hiso.run import run as run_config
    info = json.loads((run / "run.json").read_text())
    cfg = load_config(data=info["config"])
    if cfg.hash() != info["config_hash"]:
        return [f"{run}: its config hashes to {cfg.hash()} now, {info['config_hash']} recorded (the config schema "
                "changed: the run cannot be rerun as it was)"]
    old = pd.read_csv(run / "metrics.csv", dtype=str, keep_default_na=False)
    n = min(rounds, len(old))
    cfg = load_config(data=info["config"], overrides=[f"federation.rounds={n}"])
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_config(cfg, Path(tmp) / "run")
        except RunFailed as e:  # a diverged run stops at the same round when it is what the code computes
            if not (e.status == info.get("status") == "diverged" and len(old) <= rounds):
                out.append(f"{run}: {e.status} now within {n} rounds ({e.message}); {info.get('status')} recorded")
        new = pd.read_csv(Path(tmp) / "run" / "metrics.csv", dtype=str, keep_default_na=False)
        again = json.loads((Path(tmp) / "run" / "run.json").read_text())
    out += [f"{run}: initial evaluation {k}: {v!r} recorded, {again['initial_eval'].get(k)!r} now"
            for k, v in (info.get("initial_eval") or {}).items() if again["initial_eval"].get(k) != v]
    if len(new) != n:
        out.append(f"{run}: {n} rounds recorded in the first {n}, {len(new)} now")
    for col in (c for c in COMPARED if c in old.columns):
        for i in range(min(n, len(new))):
            if new[col][i] != old[col][i]:
                out.append(f"{run}: round {old['round'][i]} {col}: {old[col][i]} recorded, {new[col][i]} now")
    return out


def study_jobs(folder: Path, max_seconds: float) -> list[Path]:
    """One finished evaluation per problem and method of a saved study (<folder>/study/eval/<p>/<m>/*.csv): the
    quickest whose run took at most max_seconds (a problem's slow methods are left out, and say so)."""
    import pandas as pd
    picked = []
    for method in sorted(p for p in (folder / "study" / "eval").glob("*/*") if p.is_dir()):
        timed = sorted((float(pd.read_csv(f)["seconds"].sum()), f) for f in method.glob("*.csv"))
        if timed and timed[0][0] <= max_seconds:
            picked.append(timed[0][1])
    return picked


def check_study(job: Path, folder: Path, tier: dict) -> list[str]:
    """Rerun one study evaluation (bench.curvature_study eval, as workflows/rules/study.smk calls it, at the step
    size of the saved choice) and compare its CSV with the saved one cell by cell (numbers exactly, text as text),
    its seconds aside."""
    import pandas as pd

    from bench.curvature_study import cmd_eval, problems
    problem, method = job.parent.parent.name, job.parent.name
    protocol, seed = job.stem.rsplit("-seed", 1)
    choice = tier["study"]["reference"] if protocol == "equal-lr" else method
    args = argparse.Namespace(problem=json.dumps(problems(tier)[problem]),
                              method=json.dumps({"name": method, **tier["study"]["methods"][method]}),
                              protocol=protocol, seed=int(seed),
                              lr_from=str(folder / "study" / "tuning" / problem / f"{choice}.json"))
    with tempfile.TemporaryDirectory() as tmp:
        args.csv = str(Path(tmp) / "eval.csv")
        cmd_eval(args)
        new = pd.read_csv(args.csv, dtype=str, keep_default_na=False)
    old = pd.read_csv(job, dtype=str, keep_default_na=False)
    cols = [c for c in old.columns if c != "seconds"]
    out = [f"{job}: column {c} is not written now" for c in cols if c not in new.columns]
    return out + [f"{job}: {c}: {old[c][0]} saved, {new[c][0]} now" for c in cols
                  if c in new.columns and not _same_cell(old[c][0], new[c][0])]


def _same_cell(a: str, b: str) -> bool:
    """Two CSV cells hold the same value: the same number bit for bit (a column that also holds inf is written as
    floats, "100.0" for 100), or the same text."""
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return x == y or (x != x and y != y)


def split(page: Path, tier: dict, to: Path) -> None:
    """A published study page's eval.csv and tuning.csv -> its jobs' output files under <to>/study
    (bench.curvature_study split, which checks each row is what its job's protocol assigns)."""
    import yaml

    from bench.curvature_study import cmd_split
    (to / "tier.yaml").write_text(yaml.safe_dump(tier))
    cmd_split(argparse.Namespace(config=str(to / "tier.yaml"), tuning=str(page / "tuning.csv"),
                                 eval=str(page / "eval.csv"), to=str(to), only=None))


def verify_study(folder: Path, tier: dict, max_seconds: float) -> int:
    jobs = study_jobs(folder, max_seconds)
    bad = 0
    for job in jobs:
        diffs = check_study(job, folder, tier)
        print(f"{'agrees' if not diffs else 'DIFFERS'}: {job.relative_to(folder)}")
        for d in diffs:
            print(f"  {d}")
        bad += bool(diffs)
    every = sum(1 for p in (folder / "study" / "eval").glob("*/*") if p.is_dir())
    print(f"{len(jobs)} of {every} problem x method evaluations rerun (the quickest of each, at most {max_seconds:g} s; "
          f"{every - len(jobs)} had none so quick): {len(jobs) - bad} agree, {bad} differ")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a page's folder (docs/results/<page>) or a saved folder")
    ap.add_argument("--rounds", type=int, default=3, help="rounds rerun per run (default 3)")
    ap.add_argument("--all", action="store_true", help="every run, not one per code version and method")
    ap.add_argument("--tier", nargs="+", default=None, metavar="YAML", help="a saved study (<folder>/study): the "
                    "tier's config files, as given to snakemake --configfile")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="a study: rerun the quickest evaluation of each "
                    "problem and method, if it took at most this long (default 60)")
    a = ap.parse_args(argv)
    from hiso.progress import published_study, tier_config
    published = published_study(a.folder)
    if (a.folder / "study").is_dir() or published:
        if not a.tier:
            print(f"verify_runs: {a.folder} holds a study: give its tier's config files with --tier", file=sys.stderr)
            return 2
        tier = tier_config(a.tier)
        if not published:
            return verify_study(a.folder, tier, a.max_seconds)
        with tempfile.TemporaryDirectory() as tmp:  # a published page's CSVs -> its jobs' outputs, then as saved
            split(a.folder, tier, Path(tmp))
            return verify_study(Path(tmp), tier, a.max_seconds)
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
