"""A results page's runs, committed beside it (a tier's `page: {runs: true}`), and replayed into a results folder so
that the workflow rebuilds the page's tables, figures and text from them without computing a round.

    # the page rule archives them: <results>/pages/<name>/runs/<exp>/<method>/seed<k>/{metrics.csv,run.json} and
    # <results>/pages/<name>/tuning/<exp>/<method>.json: every run the tier ran (reported seeds, rounding twins,
    # tuning runs, those inside a scan job too) and every step-size choice
    python workflows/scripts/page_runs.py replay --page docs/results/lm --to /tmp/lm
    .venv/bin/snakemake --cores all --configfile workflows/config/lm.yaml --config results=/tmp/lm -- /tmp/lm/pages/lm.md
    python workflows/scripts/compare_tables.py docs/results/lm/tables /tmp/lm/pages/lm/tables
    python workflows/scripts/verify_runs.py docs/results/lm     # today's code still computes the page's runs

`rebuild` does the replay and the page's build in one step, and refuses (exit 1, nothing built) when the workflow
would compute anything (a run, a scan, a study job): the folder then lacks runs that its page needs.

    python workflows/scripts/page_runs.py rebuild --page docs/results/lm --tier workflows/config/lm.yaml --to /tmp/lm

A tier that runs for days on a few cores is carried across machines the same way, before its page exists: `save`
copies every run the results folder has finished so far (its run.json says complete or diverged) and every tuning
choice into a committed folder, and a replay of that folder into an empty results folder on the next machine lets
the workflow go on from there (finished tuning points are read back by their scan, finished runs are up to date).

    python workflows/scripts/page_runs.py save --results /scratch/lm --to docs/results/lm/saved    # as often as liked
    python workflows/scripts/page_runs.py replay --page docs/results/lm/saved --to /scratch/lm     # the next machine

Only finished runs are kept (a metrics.csv and run.json, never checkpoints or partial files), so the target is the
page: a tier's learned-curvature histograms, which read checkpoints, are not part of it.  A study tier (the curvature
study: <results>/study/) is saved and replayed the same way: every finished job's outputs (a tuning job's CSV and
choice, an evaluation's CSV), and a tuning scan in progress as its measured points (<csv>.partial.jsonl: each line
a finished point, so the scan resumes after them on the next machine, bench.curvature_study.Points).  A replay
writes the tuning choices first and the runs after them, so every run is newer than the choice it read and
Snakemake finds both up to date.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hiso.io import atomic_write
from hiso.progress import PARTIAL, STUDY, study_jobs
from hiso.scan import scan_run_dirs

KEPT = ("metrics.csv", "run.json")  # what a table, a figure or a provenance line reads of a run


def archive(results: Path, folder: Path, runs: list[str], choices: list[str]) -> int:
    """Copy the named runs (paths of their metrics.csv under <results>/runs), the named tuning choices (under
    <results>/tuning) and the tuning runs those list into the page folder; returns how many runs were copied.  A
    run without its metrics.csv is an error: the page would cite a run it cannot show."""
    wanted = {Path(r).parent for r in runs}
    for choice in map(Path, choices):
        dst = folder / choice.relative_to(results)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(choice, dst)
        wanted |= set(scan_run_dirs(choice))  # the tuning runs it lists: they ran inside the scan job
    for run in sorted(wanted):
        if not (run / "metrics.csv").is_file():
            raise FileNotFoundError(f"{run}: no metrics.csv; the page cannot archive an unfinished run")
        dst = folder / run.relative_to(results)
        dst.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (run / name).is_file():
                shutil.copyfile(run / name, dst / name)
    return len(wanted)


def save(results: Path, folder: Path) -> tuple[int, int]:
    """Copy every finished run under <results>/runs, every choice under <results>/tuning and every finished study
    job under <results>/study (study_jobs) into `folder` (as `archive` lays them out), replacing older copies;
    returns (runs and jobs saved, of which new or changed).  Runs in progress, and runs that failed (a failure is
    rerun), are left out: a replay must never turn them final.  A study's scan in progress is kept as its finished
    points only."""
    if not (results / "runs").is_dir() and not (results / STUDY).is_dir():
        raise FileNotFoundError(f"{results}: no runs/ or {STUDY}/ folder; nothing has run there yet")

    def copy(path: Path) -> bool:  # whether it wrote: a copy equal to the source is left as it is
        dst, data = folder / path.relative_to(results), path.read_bytes()
        if dst.is_file() and dst.read_bytes() == data:
            return False
        atomic_write(dst, data)  # a save interrupted midway leaves every file whole
        return True

    for choice in sorted((results / "tuning").rglob("*.json")):
        copy(choice)
    saved = changed = 0
    for run in sorted(p.parent for p in (results / "runs").rglob("run.json")):
        status = json.loads((run / "run.json").read_text()).get("status")
        if status in ("complete", "diverged") and (run / "metrics.csv").is_file():
            saved += 1
            changed += any([copy(run / name) for name in KEPT])  # a list: every file is copied
    for job in study_jobs(results):
        saved += 1
        changed += any([copy(f) for f in job])
    for part in sorted((results / STUDY / "tuning").rglob(f"*{PARTIAL}")):  # scans in progress: their points so far
        copy(part)
    for part in sorted((folder / STUDY / "tuning").rglob(f"*{PARTIAL}")):  # ... and no longer once a scan has ended
        if not (results / part.relative_to(folder)).is_file():
            part.unlink()
    return saved, changed


def replay(folder: Path, results: Path) -> int:
    """Write a page's archived runs and choices as a results folder's job outputs; returns how many runs."""
    if not (folder / "runs").is_dir() and not (folder / STUDY).is_dir():
        raise FileNotFoundError(f"{folder}: no runs/ or {STUDY}/ folder (the tier's page sets `runs: true` to archive "
                                "them; `save` writes either)")
    now = time.time()
    copies = [(path, results / sub / path.relative_to(folder / sub), stamp)
              # choices no older than any file of the checkout (a replay within a minute of a clone once found its
              # base configs newer than the choices, and reran every run), the runs that read them a second newer
              for sub, stamp in (("tuning", now), (f"{STUDY}/tuning", now), ("runs", now + 1), (f"{STUDY}/eval", now + 1))
              for path in sorted(p for p in (folder / sub).rglob("*") if p.is_file())]
    taken = [str(dst) for _, dst, _ in copies if dst.exists()]
    if taken:  # never over a results folder's own runs: checked before anything is written
        raise FileExistsError(f"{results} already holds {len(taken)} of these files ({taken[0]}, ...); replay into "
                              "an empty folder")
    for path, dst, stamp in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
        os.utime(dst, (stamp, stamp))
    return sum(1 for _ in (folder / "runs").glob("*/*/seed*/metrics.csv")) + len(study_jobs(folder))


COMPUTE = ("run", "scan_lr", "choose_lr", "zeta_run", "study_tune", "study_eval", "perf_job", "fixtures")  # rules
# that compute (or fetch) what a page reads; the rest only read runs: tables, figures, claims, the pages


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake (dry) run: {rule: count}; empty when it has nothing to do."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Job stats:"), None)
    out: dict[str, int] = {}
    for line in lines[start + 3:] if start is not None else []:
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            break
        out[parts[0]] = int(parts[1])
    return out


def rebuild(folder: Path, tiers: list[str], config: list[str], results: Path, cores: int, repo: Path) -> int:
    """Replay the folder into `results` (empty) and build the tier's page there, only if the workflow then plans no
    rule that computes (COMPUTE); returns 0 built, 1 refused (the folder lacks runs the page needs), else
    Snakemake's exit code."""
    from hiso.progress import tier_config
    tier = tier_config([repo / t for t in tiers])
    name = "curvature" if tier.get("study") else (tier.get("page") or {}).get("name")
    if not name:
        raise KeyError(f"{' '.join(tiers)}: the tier has no page (page: {{name: ...}} or study:) to rebuild")
    replay(folder, results)
    target = results / "pages" / f"{name}.md"
    base = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--configfile", *tiers,
            "--config", f"results={results}", *config]
    plan = subprocess.run(base + ["-n", "--", str(target)], cwd=repo, capture_output=True, text=True)
    if plan.returncode:
        print(plan.stdout[-2000:] + plan.stderr[-3000:], file=sys.stderr)
        return plan.returncode
    computing = {rule: n for rule, n in job_counts(plan.stdout + plan.stderr).items() if rule in COMPUTE}
    if computing:
        print(f"page_runs: rebuilding {target} would compute ({', '.join(f'{r}: {n}' for r, n in computing.items())})"
              f": {folder} lacks runs its page needs; nothing was built", file=sys.stderr)
        return 1
    return subprocess.run(base + ["--", str(target)], cwd=repo).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("archive", help="results folder -> page folder (the page rule runs it)")
    a.add_argument("--results", required=True)
    a.add_argument("--to", required=True, help="the page's folder, <results>/pages/<name>")
    a.add_argument("--runs", nargs="*", default=[], help="the metrics.csv of every run the tier ran")
    a.add_argument("--choices", nargs="*", default=[], help="tuning/<exp>/<method>.json of every tuning job")
    v = sub.add_parser("save", help="a running tier's finished runs -> a committed folder, to go on elsewhere")
    v.add_argument("--results", required=True)
    v.add_argument("--to", required=True, help="the folder to commit, e.g. docs/results/lm/saved")
    r = sub.add_parser("replay", help="page folder (or saved folder) -> results folder")
    r.add_argument("--page", required=True, help="a committed page's folder, e.g. docs/results/lm")
    r.add_argument("--to", required=True, help="the results folder the workflow is then run with")
    b = sub.add_parser("rebuild", help="page folder (or saved folder) -> its page, built only if nothing computes")
    b.add_argument("--page", required=True, help="a committed page's folder (or a saved one), e.g. docs/results/lm")
    b.add_argument("--tier", nargs="+", required=True, metavar="YAML", help="the config files its page's command names")
    b.add_argument("--config", nargs="*", default=[], help="the page command's --config items, e.g. 'methods=[hiso]'")
    b.add_argument("--to", required=True, help="an empty results folder; the page is <to>/pages/<name>.md")
    b.add_argument("--cores", type=int, default=2)
    b.add_argument("--repo", default=".", help="the checkout whose workflow builds it (default: here)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "archive":
            n = archive(Path(args.results), Path(args.to), args.runs, args.choices)
            print(f"archived {n} runs into {args.to}/runs")
        elif args.cmd == "save":
            n, new = save(Path(args.results), Path(args.to))
            print(f"saved {n} finished runs and jobs into {args.to} ({new} new or changed)")
        elif args.cmd == "rebuild":
            rc = rebuild(Path(args.page), args.tier, args.config, Path(args.to), args.cores, Path(args.repo))
            if rc == 0:
                print(f"built {args.to}/pages/ from {args.page} without computing; publish with "
                      f"cp -r {args.to}/pages/* docs/results/")
            return rc
        else:
            n = replay(Path(args.page), Path(args.to))
            print(f"replayed {n} runs and jobs into {args.to}; the workflow with results={args.to} runs only what they "
                  "lack")
    except (FileNotFoundError, FileExistsError, json.JSONDecodeError, KeyError) as e:
        print(f"page_runs: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
