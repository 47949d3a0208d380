"""Where a long tier stands: one line per run folder under a results folder, read from what the runs have written
(run.json, metrics.csv or, while a run goes on, metrics.partial.csv), without touching them.

    python -m hiso progress RESULTS [--metric test_loss] [--only 'lm-*/hiso*']

A line: the run (<exp>/<method>/seed<k>), its state (complete, diverged, failed, or "in progress" for a run whose
run.json says running: it is running now, or it was stopped and resumes when started again), the rounds done out
of its budget (a run in progress writes its rows at each checkpoint), the metric's last evaluation, its best one
and that round, and the CPU minutes its rounds took (their evaluations included).
The last line sums them: runs per state and CPU-hours so far.  A tuning run's test split is its dev split.
A study tier (<results>/study: the curvature study's jobs) is summed by its jobs: tuning scans finished and in
progress (with the points each has measured), evaluations finished, and the wall hours their rows record.

    python -m hiso progress RESULTS --tier workflows/config/lm.yaml [--methods hiso decomfl]

also lists the runs the tier plans (hiso/plan.py, the files merged in order as Snakemake merges --configfile, sliced
as --config 'methods=[...]' slices) that have no folder yet, as "not started", and estimates the CPU time left:
a run in progress at its own CPU time per round so far, a run not started at the median CPU time of its
experiment's complete runs of the same kind (reported run or rounding twin, or tuning run).  A full-grid scan's
points (`scan_seeds`) are planned at its grid; points it adds past an edge appear once they start.  For a study
tier (`study:`, the curvature tier) it counts the evaluations and tuning scans still to run and their hours
(study_left).
"""
from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

import pandas as pd


def _metrics(run: Path) -> pd.DataFrame | None:
    for name in ("metrics.csv", "metrics.partial.csv"):
        if (run / name).is_file():
            try:
                return pd.read_csv(run / name)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):  # written at this moment: read next time
                return None
    return None


STUDY = "study"  # a study tier's jobs (workflows/rules/study.smk): study/tuning/<problem>/<method>.{csv,json}, study/eval/
PARTIAL = ".partial.jsonl"  # a tuning scan's points so far, beside its CSV (bench.curvature_study.Points)


def study_jobs(results: Path) -> list[list[Path]]:
    """The finished jobs of a study tier under <results>/study, each as its output files: a tuning job's CSV and
    choice (both written: the choice is written last), an evaluation's CSV (written only when it has finished)."""
    root = results / STUDY
    tuning = [[c, c.with_suffix(".json")] for c in sorted((root / "tuning").rglob("*.csv"))
              if c.with_suffix(".json").is_file()]
    return tuning + [[e] for e in sorted((root / "eval").rglob("*.csv"))]


def higher_is_better(metric: str) -> bool:
    """A metric column's direction: the tasks' declared metrics (results.HIGHER_IS_BETTER), a dev split's column of
    one (run.also_dev: noise.dev_column, e.g. dev_loss of test_loss), and the training loss; ValueError naming the
    metric otherwise, so that a best is never taken the wrong way."""
    from .noise import dev_column
    from .results import HIGHER_IS_BETTER
    known = {**HIGHER_IS_BETTER, "train_loss": False}
    known.update({dev_column(m): h for m, h in HIGHER_IS_BETTER.items() if dev_column(m) not in known})
    if metric in known:
        return known[metric]
    raise ValueError(f"--metric {metric!r}: not a metric the tasks declare ({', '.join(sorted(known))}, or dev_ "
                     "and a test metric)")


def _row(run: str, state: str, rounds: int = 0, budget: int | None = None) -> dict:
    """A line of the report before its metrics and CPU time are read."""
    return {"run": run, "state": state, "rounds": rounds, "budget": budget, "last": math.nan, "best": math.nan,
            "best_round": None, "cpu_min": math.nan}


def rows(results: Path, metric: str, only: str | None = None) -> list[dict]:
    """One dict per run folder (a folder with a run.json) under <results>/runs, in path order."""
    higher = higher_is_better(metric)
    out = []
    for info in sorted((results / "runs").glob("*/*/seed*/run.json")):
        run = info.parent
        name = str(run.relative_to(results / "runs"))
        if only and not fnmatch.fnmatchcase(name, only):
            continue
        try:
            meta = json.loads(info.read_text())
        except json.JSONDecodeError:
            continue
        status = {"running": "in progress"}.get(meta.get("status"), meta.get("status", "?"))
        m = _metrics(run)
        row = _row(name, status, meta.get("rounds_done", 0), meta.get("config", {}).get("federation", {}).get("rounds"))
        if m is not None and len(m):
            row["rounds"] = max(int(m["round"].max()), row["rounds"] or 0)
            if "cpu_seconds" in m:
                row["cpu_min"] = float(m["cpu_seconds"].sum()) / 60
            if metric in m and m[metric].notna().any():
                e = m.dropna(subset=[metric])
                i = e[metric].idxmax() if higher else e[metric].idxmin()
                row.update(last=float(e[metric].iloc[-1]), best=float(e.loc[i, metric]), best_round=int(e.loc[i, "round"]))
        out.append(row)
    return out


def tier_config(tiers: list[str | Path]) -> dict:
    """The tier's config files merged in order, as Snakemake merges its --configfile list."""
    from .checks import load_yaml
    from .config import _merge
    config: dict = {}
    for tier in tiers:
        config = _merge(config, load_yaml(Path(tier).read_text(), str(tier)) or {})
    return config


def planned(tiers: list[str | Path], methods: list[str] | None = None) -> set[str]:
    """<exp>/<method>/seed<k> of every run a workflow tier plans: reported runs, rounding twins, tuning runs and the
    grid points of full-grid scans on their seeds (a scan that stops past its best plans no fixed points)."""
    from .plan import experiments, runs_of
    config = tier_config(tiers)
    if methods:
        config["methods"] = list(methods)
    out = set()
    for exp, spec in experiments(config).items():
        out |= {f"{exp}/{m}/seed{s}" for m, s in runs_of(config, spec)}
        for method, grid in (spec.get("scans") or {}).items() if spec.get("scan_seeds") else ():
            out |= {f"{exp}/{method}@{lr:g}/seed{s}" for lr in grid for s in spec["scan_seeds"]}
    return out


def study_planned(tiers: list[str | Path]) -> dict | None:
    """A study tier's plan, as workflows/rules/study.smk plans it (bench.curvature_study): its evaluation jobs
    (`evals`: <problem>/<method>/<protocol>-seed<k>), tuning scans (`scans`: <problem>/<method>), and the labels
    its CSVs give problems, methods and protocols (`labels`: key -> label); None for a tier without `study:`."""
    config = tier_config(tiers)
    if not config.get("study"):
        return None
    from bench.curvature_study import PROTOCOLS, jobs, problems
    study = config["study"]
    labels = {**{p: spec["label"] for p, spec in study["problems"].items()},
              **{m: spec["label"] for m, spec in study["methods"].items()}, **PROTOCOLS}
    return {"evals": [f"{p}/{m}/{proto}-seed{s}" for p, m, proto, s in jobs(config)],
            "scans": [f"{p}/{m}" for p, spec in problems(config).items() for m in spec["methods"]], "labels": labels}


def _kind(run: str) -> tuple[str, str]:
    exp, method, _ = run.split("/")
    return exp, "tuning" if "@" in method else "reported"


def left(table: list[dict], every: list[dict]) -> tuple[float, int]:
    """(CPU hours the unfinished runs of `table` still need, estimated as the module says from the complete runs
    among `every`; runs with nothing to go by)."""
    done: dict[tuple[str, str], list[float]] = {}
    for r in every:
        if r["state"] == "complete" and not math.isnan(r["cpu_min"]):
            done.setdefault(_kind(r["run"]), []).append(r["cpu_min"])
    minutes, unknown = 0.0, 0
    for r in table:
        if r["state"] == "in progress" and r["rounds"] and r["budget"] and not math.isnan(r["cpu_min"]):
            minutes += r["cpu_min"] / r["rounds"] * (r["budget"] - r["rounds"])
        elif r["state"] in ("in progress", "not started"):
            same = done.get(_kind(r["run"]))
            if same:
                minutes += float(pd.Series(same).median())
            else:
                unknown += 1
    return minutes / 60, unknown


def _points(partial: Path) -> list[dict]:
    """A scan in progress's measured points, as their rows (each with its seconds; the first line is the job's
    header, bench.curvature_study.Points)."""
    out = []
    for line in partial.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row = row.get("row", row) if isinstance(row, dict) else None  # a point: {"lr", "cap", "row": {...}}
        if isinstance(row, dict) and "seconds" in row:
            out.append(row)
    return out


def published_study(folder: Path) -> bool:
    """Whether a folder is a published study page: the eval.csv and tuning.csv its report writes."""
    return (folder / "eval.csv").is_file() and (folder / "tuning.csv").is_file()


def _like(page: Path, labels: dict[str, str]) -> tuple[dict, dict]:
    """A published study page's own seconds (its eval.csv and tuning.csv), keyed as the jobs are: evaluations by
    <problem>/<method>/<protocol>-seed<k>, scans by <problem>/<method> (their points summed)."""
    key = {v: k for k, v in labels.items()}  # label -> key (problems, methods and protocols have distinct labels)
    ev = pd.read_csv(page / "eval.csv", keep_default_na=False, na_values=[""])
    tu = pd.read_csv(page / "tuning.csv", keep_default_na=False, na_values=[""])
    evals = {f"{key.get(r.problem.strip())}/{key.get(r.method)}/{key.get(r.protocol)}-seed{r.seed}": float(r.seconds)
             for r in ev.itertuples()}
    scans = {f"{key.get(p.strip())}/{key.get(m)}": float(g.seconds.sum()) for (p, m), g in tu.groupby(["problem", "method"])}
    return evals, scans


def finished_seconds(results: Path) -> tuple[dict[str, float], dict[str, pd.Series]]:
    """A study tier's finished jobs (study_jobs) with the seconds their rows record: each evaluation's
    (<problem>/<method>/<protocol>-seed<k> -> seconds) and each tuning scan's per point (<problem>/<method> ->
    seconds of its rows)."""
    root = results / STUDY
    evals = {str(p.relative_to(root / "eval").with_suffix("")): float(pd.read_csv(p)["seconds"].sum())
             for p in (root / "eval").rglob("*.csv")}
    scans = {str(c.relative_to(root / "tuning").with_suffix("")): pd.read_csv(c)["seconds"]
             for c in (root / "tuning").rglob("*.csv") if c.with_suffix(".json").is_file()}
    return evals, scans


def study_left(results: Path, plan: dict, like: Path | None = None, finished: tuple | None = None) -> str:
    """The study jobs a tier plans that have not finished, and the hours they still need.  Without `like`: an
    evaluation (<problem>/<method>/<protocol>-seed<k>) at the median of its problem and method's finished
    evaluations (else its problem's), a tuning scan (<problem>/<method>) at its problem's median points per finished
    scan, less the points it has measured (at least one left), each at the median seconds of its problem's points.
    With `like` (a published page of the same tier, e.g. docs/results/curvature): each job at that page's own
    seconds for the same job (a seed it did not run: the median of its problem and method there), times the median
    ratio of this run's finished evaluations of its problem to the same ones there (machines and kernels differ, and
    not alike for every problem: else the ratio over all problems), a scan less the seconds of its points so far.
    Hours are the jobs' own (the seconds their rows record, one thread each).  `finished`: finished_seconds(results),
    where the caller has read it already."""
    evals, scans = plan["evals"], plan["scans"]
    root = results / STUDY
    done_eval, scan_rows = finished if finished is not None else finished_seconds(results)

    def median(done: dict[str, float], *prefixes: str) -> float | None:
        for prefix in prefixes:
            same = [v for k, v in done.items() if k.startswith(prefix + "/")]
            if same:
                return float(pd.Series(same).median())
        return None

    if like is not None:
        then_eval, then_scan = _like(like, plan["labels"])
        both = {k: done_eval[k] / then_eval[k] for k in done_eval if then_eval.get(k)}
        overall = float(pd.Series(list(both.values())).median()) if both else 1.0
        ratios = {p: float(pd.Series([v for k, v in both.items() if k.startswith(p + "/")]).median())
                  for p in {k.split("/")[0] for k in both}}  # per problem: its kernels' speed here against there
        how = (f"at {like}'s own seconds for the same jobs, times the median ratio of this run's finished evaluations "
               f"to the same ones there, per problem (overall {overall:.2f}, from {len(both)}; a problem with none "
               "finished takes the overall)")
    else:
        how = ("an evaluation at the median of its problem and method's finished ones, else its problem's; a scan's "
               "points left at its problem's median point; quick jobs tend to finish first, so this is low while "
               "slow kinds have few finished")
    per: dict[str, list] = {}  # problem -> [evaluations left, scans left, seconds, jobs with nothing to go by]
    todo_eval = [e for e in evals if e not in done_eval]
    for job in todo_eval:
        problem, method, _ = job.split("/")
        row = per.setdefault(problem, [0, 0, 0.0, 0])
        if like is not None:
            est = then_eval.get(job, median(then_eval, f"{problem}/{method}"))
            est = None if est is None else est * ratios.get(problem, overall)
        else:
            est = median(done_eval, f"{problem}/{method}", problem)
        row[0] += 1
        row[2] += est or 0.0
        row[3] += est is None
    todo_scan = [j for j in scans if j not in scan_rows]
    for job in todo_scan:
        problem = job.split("/")[0]
        row = per.setdefault(problem, [0, 0, 0.0, 0])
        same = [v for k, v in scan_rows.items() if k.startswith(problem + "/")]
        partial = root / "tuning" / f"{job}.csv{PARTIAL}"
        measured = _points(partial) if partial.is_file() else []
        row[1] += 1
        if like is not None and job in then_scan:
            row[2] += max(then_scan[job] * ratios.get(problem, overall) - sum(float(m["seconds"]) for m in measured),
                          0.0)
        elif like is None and same:  # its problem's median points per scan, each at its problem's median point
            points = float(pd.Series([len(v) for v in same]).median())
            row[2] += max(points - len(measured), 1.0) * float(pd.concat(same).median())
        else:
            row[3] += 1
    lines = [f"  {p}: {e} evaluation{'s' * (e != 1)} and {n} scan{'s' * (n != 1)} left, about {sec / 3600:.2f} h"
             + (f" ({u} with nothing finished of their kind to go by)" if u else "")
             for p, (e, n, sec, u) in sorted(per.items())]
    total, unknown = sum(r[2] for r in per.values()), sum(r[3] for r in per.values())
    return "\n".join([f"study left: {len(todo_eval)} of {len(evals)} evaluations and {len(todo_scan)} of {len(scans)} "
                       f"tuning scans, about {total / 3600:.1f} hours of job time ({how})"
                       + (f"; {unknown} job{'s' * (unknown != 1)} with nothing to go by" if unknown else ""), *lines])


def study(results: Path, finished: tuple | None = None) -> str | None:
    """A study tier's jobs so far (workflows/rules/study.smk; bench.curvature_study), or None without study/.
    `finished`: finished_seconds(results), where the caller has read it already."""
    root = results / STUDY
    if not root.is_dir():
        return None
    evals, scans = finished if finished is not None else finished_seconds(results)
    going = sorted((root / "tuning").rglob(f"*.csv{PARTIAL}"))
    hours = (sum(evals.values()) + sum(float(v.sum()) for v in scans.values())) / 3600
    lines = [f"{str(g.relative_to(root / 'tuning')).removesuffix(f'.csv{PARTIAL}')}: tuning scan in progress, "
             f"{max(len(g.read_text().splitlines()) - 1, 0)} point(s) measured" for g in going]
    return "\n".join([*lines, f"study: {len(scans)} tuning scans finished, {len(going)} in progress; {len(evals)} "
                      f"evaluations finished; {hours:.2f} hours of wall time in their runs"])


def report(results: Path, metric: str, only: str | None = None, plan: set[str] | None = None,
           study_plan: dict | None = None, like: Path | None = None) -> str:
    """The progress report; `plan`: the runs the tier plans (planned), listed as not started where they have no
    folder, with the CPU time left; `study_plan`: a study tier's plan (study_planned), whose jobs left are timed
    as study_left says (`like`: a published page of the tier to time them by)."""
    # with a plan, every run folder is read: the estimate goes by the complete runs, shown or not
    every = rows(results, metric, None if plan is not None else only)
    if plan is not None:
        every += [_row(name, "not started") for name in plan - {r["run"] for r in every}]
        every.sort(key=lambda r: r["run"])
    table = [r for r in every if not only or fnmatch.fnmatchcase(r["run"], only)]
    finished = finished_seconds(results) if (results / STUDY).is_dir() else None  # read once for both summaries
    jobs = study(results, finished)
    if jobs and study_plan is not None:
        jobs += "\n" + study_left(results, study_plan, like, finished)
    if not table:
        return jobs or (f"{results}: no run folders under runs/" + (f" matching {only!r}" if only else ""))
    width = max(len(r["run"]) for r in table)
    lines = [f"{'run':{width}s}  {'state':11s} {'rounds':>9s}  {metric + ' last':>14s} {'best @ round':>16s} {'CPU min':>8s}"]
    for r in table:
        budget = f"/{r['budget']}" if r["budget"] else ""
        best = f"{r['best']:.4g} @ {r['best_round']}" if r["best_round"] is not None else "-"
        last = f"{r['last']:.4g}" if not math.isnan(r["last"]) else "-"
        cpu = f"{r['cpu_min']:.1f}" if not math.isnan(r["cpu_min"]) else "-"
        lines.append(f"{r['run']:{width}s}  {r['state']:11s} {str(r['rounds']) + budget:>9s}  {last:>14s} {best:>16s} {cpu:>8s}")
    order = ("complete", "in progress", "not started", "diverged", "failed")
    counts = pd.Series([r["state"] for r in table]).value_counts()
    states = counts.reindex([*[s for s in order if s in counts], *sorted(set(counts.index) - set(order))])
    hours = sum(r["cpu_min"] for r in table if not math.isnan(r["cpu_min"])) / 60
    lines.append(f"{len(table)} run{'s' * (len(table) != 1)}: " + ", ".join(f"{n} {s}" for s, n in states.items())
                 + f"; {hours:.2f} CPU-hours in their rounds so far (evaluations included)")
    if plan is not None:
        todo, unknown = left(table, every)
        lines.append(f"left: about {todo:.1f} CPU-hours (runs in progress at their own rate so far, runs not "
                     "started at the median of their experiment's complete runs of the same kind)"
                     + (f"; {unknown} run{'s' * (unknown != 1)} with no complete run of their kind to go by"
                        if unknown else ""))
    return "\n".join(lines + ([jobs] if jobs else []))
