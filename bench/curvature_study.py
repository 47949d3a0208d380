"""The curvature study's jobs: what HiSo's curvature buys, against every scalar-only curvature estimator.

The study is a workflow tier (workflows/config/curvature.yaml names its problems and methods; the rules are in
workflows/rules/study.smk).  Protocol, for every problem:
  1. tuning (`tune`, one job per problem x method): the step size is picked from a log grid on a *validation*
     run, never on the test metric: the quadratic uses a separate problem instance (the tuning seed: other
     spectrum draw, optima and directions), digits and the LM a dev split held out of training.  hiso.tuning's
     protocol: fewest rounds to the target, ties broken by the final validation metric; the scan stops past
     the best, extends the grid past an edge where the best lies, and refines once around the best point when
     nothing reaches the target.  Every tried point is a row of the job's CSV.
  2. evaluation (`eval`, one job per problem x method x protocol x seed): the test metric at the tuned step
     size: rounds, forward passes and bytes to the target (so methods that spend 2P + 1 passes or 2P scalars
     per step are not flattered), the final metric, and the agreement of the learned diagonal with the true
     Hessian diagonal (Spearman, log10 scale and spread; exact on quadratics, Hutchinson on digits) and
     zeta = sum_i A_ii / H_i.
  3. equal step size (protocol "equal lr"): the problem's `equal_lr` methods at the reference's (DeComFL's)
     tuned step size (HiSo's advantage may be robustness).
  4. rounding twins (protocol "rounding twin", the study's `rounding:` seeds): each tuned run again with its
     initial model one ulp away (run.init_ulps 1, hiso/noise.py), so the page sets the rounding spread of the
     rounds to target beside their seed spread.
  5. `report`: every job's rows in two CSVs, the summary tables and the agreement figure as one results page.
`split` writes stored rows (a committed page's CSVs) as the jobs' outputs, so the workflow rebuilds the page
from them without computing.  Every run goes through the suite's runner, hiso.run.run.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from hiso import noise, tuning
from hiso.config import load_config, set_dotted
from hiso.diagnostics import agreement, true_diagonal, zeta
from hiso.io import atomic_write
from hiso.plan import assignment, kept
from hiso.results import HIGHER_IS_BETTER, reached
from hiso.run import RunFailed, run

from .curvature_report import page

MAX_EXTENSION = tuning.MAX_EXTENSION  # grid steps tuning may add past an edge of the grid where the best lies
PROTOCOLS = {"tuned": "tuned", "equal-lr": "equal lr", "rounding": "rounding twin"}  # file name -> CSV's column


def measure(spec: dict, method: dict, lr: float, seed: int, split: str, track: bool = False,
            max_rounds: int | None = None, init_ulps: int = 0) -> dict:
    """One run through the suite's runner (hiso.run.run), stopped at the target or after `max_rounds` (default:
    the problem's budget): rounds, forward passes and bytes to the target (inf if not reached), the final
    metric, and with `track` the learned H's agreement with the true diagonal.  `init_ulps` > 0: a rounding
    twin (the initial trainable model that many floats towards +inf)."""
    rounds = spec["rounds"] if max_rounds is None else min(spec["rounds"], max_rounds)
    sets: dict = {}
    for key, value in method.get("sets", {}).items():  # the dotted `--set`s, parsed as the run rule's are
        set_dotted(sets, assignment(key, value))
    fed_cfg = {**spec.get("federation", {}), **sets.get("federation", {}), "rounds": rounds, "lr": lr}
    dev = split == "dev" and spec["task"]["name"] != "quadratic"  # the quadratic tunes on another instance
    cfg = load_config(data={"method": sets.get("method", "hiso"), "seed": seed, "task": spec["task"],
                            "federation": fed_cfg, "curvature": sets.get("curvature", {}),
                            "run": {"progress": False, "threads": 1, "eval_every": spec["eval_every"],
                                    "checkpoint_every": 0, "eval_split": "dev" if dev else "test",
                                    "init_ulps": init_ulps}})
    res = {"rounds": math.inf, "forward_passes": math.inf, "bytes": math.inf, "final": float("nan")}
    trace, cost = [], {"passes": 0, "bytes": 0}

    def count(fed):  # cumulative cost, for the cost at the round the target is reached
        inner = fed.run_round

        def counted():
            row = inner()
            cost["passes"] += row["forward_passes"]
            cost["bytes"] += row["bytes_up"] + row["bytes_down"]
            return row
        fed.run_round = counted

    def on_evaluate(fed, task, row):
        value, r = row[spec["metric"]], row["round"]
        res["final"] = value
        if track and task.__class__.__name__ == "Quadratic" and r % (10 * spec["eval_every"]) == 0:
            trace.append({"round": r, **agreement(fed.server.curvature.flat(), true_diagonal(task))})
        if reached(value, spec["metric"], spec["target"]):
            res.update(rounds=r, forward_passes=cost["passes"], bytes=cost["bytes"])
            return "target reached"
        if spec.get("no_progress_after") and r >= spec["no_progress_after"] * spec["rounds"] and value > 1.0:
            res["error"] = f"no progress (rel. suboptimality {value:.3g} > 1 at round {r})"
            return res["error"]
        return None
    t0 = time.perf_counter()
    fed = None
    try:
        fed = run(cfg, federation_hook=count, on_evaluate=on_evaluate).federation
    except RunFailed as e:  # a diverged step size, or a curvature error: a failed grid point, recorded as such
        res["error"] = "diverged" if e.status == "diverged" else e.message.split(":")[0]
    res["seconds"] = time.perf_counter() - t0
    hutch = spec.get("agreement", {})
    if track and fed is not None and "error" not in res and hutch is not None:
        fed.load_server_model()
        task = fed.task
        batch = task.batch(0, np.random.default_rng(0), hutch["batch"]) if "batch" in hutch else None
        true = true_diagonal(task, samples=hutch.get("samples", 64), batch=batch)
        learned = fed.server.curvature.flat()
        res.update({f"H_{k}": v for k, v in agreement(learned, true).items()})
        res.update({f"H_{k}": v for k, v in zeta(learned, true).items()})
        res["trace"] = trace
    return res


def tune(spec: dict, method: dict, grid, seed: int, rows: list[dict], lookup=None, points=None) -> float:
    """The step size hiso.tuning's protocol picks on the tuning instance; every tried point is appended to `rows`.
    `lookup(lr)` returns a stored row instead of running (split); None where nothing is stored.  `points`
    (a Points) keeps each measured point as it finishes and gives back those a killed job had measured."""
    def evaluate(lr: float, cap: int | None, note: str | None) -> dict:
        r = lookup(lr) if lookup is not None else None
        if r is None and points is not None:
            r = points.get(lr, cap)
        if r is None:
            if lookup is not None:
                raise SystemExit(f"stored tuning rows of {spec['label']} / {method['label']} lack lr {lr!r}, "
                                 "which the tuning protocol tries: they are not this study's runs")
            r = {"problem": spec["label"], "method": method["label"], "lr": float(lr),
                 **measure(spec, method, float(lr), seed=seed, split="dev", max_rounds=cap)}
            if cap is not None and math.isinf(r["rounds"]):
                r["error"] = r.get("error") or f"stopped at {cap} rounds (2x the best)"
            if note:
                r[note] = True  # a CSV column: `extended` or `refined`
            print(f"tune {spec['label']} {method['label']:20s} lr={lr:<9.3g} rounds={r['rounds']} "
                  f"final={r['final']:.4g} {r.get('error', '') or ''} ({r['seconds']:.1f}s)", flush=True)
            if points is not None:
                points.put(lr, cap, r)
        rows.append(r)
        return r
    return tuning.tune(evaluate, grid, HIGHER_IS_BETTER.get(spec["metric"], True), spec["rounds"], MAX_EXTENSION)


def grid_of(spec: dict, method: dict, quick: bool) -> list[float]:
    grid = spec.get("grids", {}).get(method["name"], spec["grid"])  # a method's own grid where it has one
    return grid[::2] if quick else grid


FIRST = ["problem", "method", "protocol", "lr", "seed", "rounds", "forward_passes", "bytes", "final", "seconds",
         "error", "extended", "refined"]  # the CSVs' leading columns, in this order; the rest sorted, trace last


OPTIONAL = ("error", "extended", "refined")  # columns only some rows have


def _csv(rows: list[dict], path: Path) -> None:
    df = pd.DataFrame(rows)
    rest = sorted(c for c in df.columns if c not in FIRST and c != "trace")
    df = df[[c for c in FIRST if c in df.columns] + rest + (["trace"] if "trace" in df.columns else [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, df.to_csv(index=False))


def _same(a, b) -> bool:
    return isinstance(a, (int, float)) and math.isclose(float(a), float(b), rel_tol=1e-12)


# --- the jobs ---------------------------------------------------------------------------------------------
class Points:
    """A tuning job's measured points, one JSON line each in <csv>.partial.jsonl, appended as each point finishes:
    a job killed mid-scan resumes after its last finished point instead of from the grid's start (the runs are
    deterministic, so a point measured again would give the same row).  The first line is the job's problem,
    method, grid and seed; a file of another job is started afresh.  Removed when the job's outputs are written."""

    def __init__(self, path: Path, job: dict):
        self.path, self.rows = path, {}
        lines = path.read_text().splitlines() if path.is_file() else []
        kept = []
        if lines and _header(lines[0]) == job:
            for line in lines[1:]:
                try:
                    p = json.loads(line)
                except json.JSONDecodeError:  # the last line of a job killed while writing it
                    break
                self.rows[p["lr"], p["cap"]] = p["row"]
                kept.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, "".join(f"{line}\n" for line in [json.dumps(job), *kept]))
        if self.rows:
            print(f"tune: resuming after {len(self.rows)} measured point(s) in {path}", flush=True)

    def get(self, lr: float, cap: int | None) -> dict | None:
        r = self.rows.get((float(lr), cap))
        return None if r is None else dict(r)

    def put(self, lr: float, cap: int | None, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"lr": float(lr), "cap": cap, "row": row}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _header(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def cmd_tune(a) -> None:
    spec, method = json.loads(a.problem), json.loads(a.method)
    grid = grid_of(spec, method, a.quick)
    out = Path(a.csv)
    points = Points(out.with_name(out.name + ".partial.jsonl"),
                    {"problem": spec, "method": method, "grid": grid, "seed": a.seed})
    rows: list[dict] = []
    lr = tune(spec, method, grid, a.seed, rows, points=points)
    _csv(rows, out)
    atomic_write(Path(a.json), json.dumps({"problem": spec["label"], "method": method["label"], "lr": lr}))
    points.path.unlink()


def cmd_eval(a) -> None:
    spec, method = json.loads(a.problem), json.loads(a.method)
    lr = json.loads(Path(a.lr_from).read_text())["lr"]
    protocol = PROTOCOLS[a.protocol]
    r = measure(spec, method, lr, seed=a.seed, split="test", track=protocol == "tuned",
                init_ulps=1 if protocol == "rounding twin" else 0)
    r["trace"] = json.dumps(r.pop("trace", []))
    row = {"problem": spec["label"], "method": method["label"], "protocol": protocol, "lr": lr, "seed": a.seed, **r}
    print(f"eval {spec['label']} {method['label']:20s} {protocol:8s} lr={lr:<9.3g} seed={a.seed} "
          f"rounds={r['rounds']} final={r['final']:.4g} {r.get('error', '') or ''} ({r['seconds']:.1f}s)")
    _csv([row], Path(a.csv))


def cmd_report(a) -> None:
    study = json.loads(a.study)
    out = Path(a.csv_dir)
    ev = [pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in a.eval]
    tu = [pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in a.tuning]
    _csv(pd.concat(ev, ignore_index=True).to_dict("records"), out / "eval.csv")
    _csv(pd.concat(tu, ignore_index=True).to_dict("records"), out / "tuning.csv")
    readings = Path(a.readings).read_text() if a.readings else None
    atomic_write(Path(a.md), page(study, out, a.figure_rel, a.command, a.commit, a.date, readings))


def rounding_seeds(tier: dict) -> list[int]:
    """The study's `rounding:` (true: every seed, or a list of its seeds) -> the seeds whose tuned runs get a
    rounding twin (a problem runs those among its seeds); ValueError for a seed no problem runs."""
    seeds = sorted({*tier["seeds"], *(s for spec in tier["study"]["problems"].values() for s in spec.get("seeds", []))})
    return noise.twin_seeds(tier["study"].get("rounding"), seeds, "study.rounding", "seeds of the tier or its problems")


def jobs(tier: dict):
    """(problem, method, protocol, seed) of every evaluation job of the tier, in the report's order."""
    quick = tier.get("study_quick", False)
    twins = rounding_seeds(tier)
    for p, spec in problems(tier).items():
        for s in ([0] if quick else spec.get("seeds", tier["seeds"])):  # a problem's own seeds, where cheap
            for m in spec["methods"]:
                yield p, m, "tuned", s
                if m in spec["equal_lr"] and not quick:
                    yield p, m, "equal-lr", s
                if s in twins:
                    yield p, m, "rounding", s


def kept_methods(tier: dict, names) -> list[str]:
    """The methods of `names` that the tier's method slice (`study_methods`) keeps: all without one."""
    keep = tier.get("study_methods")
    return [m for m in names if not keep or m in keep]


def problems(tier: dict) -> dict:
    """The tier's problems (those matching `only`, shell patterns), each with its methods (`study_methods`);
    ValueError names a method that the study does not define."""
    study, keep_m = tier["study"], tier.get("study_methods")
    for where, names in [("study.reference", [study["reference"]]), ("study.oracles", study.get("oracles", [])),
                         ("study.learned", study.get("learned", [])), ("study_methods", keep_m or [])] + [
            (f"study.problems.{p}.{k}", spec.get(k, [])) for p, spec in study["problems"].items()
            for k in ("methods", "equal_lr")]:
        unknown = [m for m in names if m not in study["methods"]]
        if unknown:
            raise ValueError(f"{where}: {unknown} not in study.methods ({', '.join(study['methods'])})")
    out = {}
    for p, spec in tier["study"]["problems"].items():
        if not kept(tier, p):
            continue
        methods = kept_methods(tier, spec["methods"])
        if methods:
            out[p] = {**spec, "name": p, "methods": methods,
                      "equal_lr": [m for m in spec.get("equal_lr", []) if m in methods]}
    if tier.get("only") and not out:
        raise ValueError(f"only: {tier['only']} matches no problem of the study ({', '.join(study['problems'])})")
    return out


def cmd_split(a) -> None:
    """Stored rows -> the jobs' output files under --to, after checking they are what the jobs would compute:
    each tuning scan is replayed through the tuning protocol on the stored rows (any point it would try must be
    stored), and every evaluation row is at the step size its protocol assigns."""
    tier = yaml.safe_load(Path(a.config).read_text())
    if a.only:
        tier["only"] = a.only
    study, root = tier["study"], Path(a.to) / "study"
    ev = pd.read_csv(a.eval, keep_default_na=False, na_values=[""])
    tu = pd.read_csv(a.tuning, keep_default_na=False, na_values=[""])
    labels = {m: v["label"] for m, v in study["methods"].items()}
    chosen: dict = {}
    for p, spec in problems(tier).items():
        for m in spec["methods"]:
            method = {"name": m, **study["methods"][m]}
            stored = tu[(tu.problem.str.strip() == spec["label"]) & (tu.method == labels[m])]
            rows: list[dict] = []

            def lookup(lr, stored=stored):
                hit = stored[[_same(x, lr) for x in stored.lr]]
                if hit.empty:
                    return None
                return {k: v for k, v in hit.iloc[0].to_dict().items() if not (k in OPTIONAL and pd.isna(v))}
            chosen[p, m] = tune(spec, method, grid_of(spec, method, False), tier.get("tuning_seed", 100), rows, lookup)
            for r in rows:
                r["problem"] = spec["label"]
            _csv(rows, root / "tuning" / p / f"{m}.csv")
            atomic_write(root / "tuning" / p / f"{m}.json",
                         json.dumps({"problem": spec["label"], "method": labels[m], "lr": chosen[p, m]}))
    for p, m, protocol, s in jobs(tier):
        label = study["problems"][p]["label"]
        lr = chosen[p, study["reference"]] if protocol == "equal-lr" else chosen[p, m]
        hit = ev[(ev.problem.str.strip() == label) & (ev.method == labels[m]) & (ev.protocol == PROTOCOLS[protocol])
                 & (ev.seed == s)]
        if len(hit) != 1 or not _same(hit.lr.iloc[0], lr):
            raise SystemExit(f"stored evaluation rows of {label} / {labels[m]} / {protocol} / seed {s}: "
                             f"{len(hit)} rows, want one at lr {lr!r}")
        row = hit.iloc[0].to_dict()
        row["problem"] = label
        _csv([{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}],
             root / "eval" / p / m / f"{protocol}-seed{s}.csv")
    print(f"wrote the outputs of {len(chosen)} tuning and {sum(1 for _ in jobs(tier))} evaluation jobs under {root}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune", help="one tuning scan (problem x method)")
    e = sub.add_parser("eval", help="one evaluation run (problem x method x protocol x seed)")
    for p in (t, e):
        p.add_argument("--problem", required=True, help="the problem's spec (JSON, from the tier)")
        p.add_argument("--method", required=True, help="the method's spec (JSON, from the tier)")
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--csv", required=True)
    t.add_argument("--quick", action="store_true", help="every other grid point")
    t.add_argument("--json", required=True, help="the chosen step size")
    e.add_argument("--protocol", choices=list(PROTOCOLS), required=True)
    e.add_argument("--lr-from", required=True, help="the tuning job's JSON whose step size this run uses")
    r = sub.add_parser("report", help="every job's rows -> CSVs and the results page")
    r.add_argument("--study", required=True, help="the tier's study (JSON)")
    r.add_argument("--tuning", nargs="+", required=True)
    r.add_argument("--eval", nargs="+", required=True)
    r.add_argument("--csv-dir", required=True)
    r.add_argument("--md", required=True)
    r.add_argument("--figure-rel", required=True)
    r.add_argument("--readings", default=None, help="hand-written readings; numbers only as "
                   "{{table|problem|method|column}} placeholders")
    r.add_argument("--command", required=True)
    r.add_argument("--commit", required=True)
    r.add_argument("--date", required=True)
    s = sub.add_parser("split", help="stored rows -> the jobs' outputs (the workflow then only reports)")
    s.add_argument("--config", default="workflows/config/curvature.yaml")
    s.add_argument("--tuning", default="docs/results/curvature/tuning.csv")
    s.add_argument("--eval", default="docs/results/curvature/eval.csv")
    s.add_argument("--to", required=True, help="the results folder of the tier's run")
    s.add_argument("--only", nargs="+", default=None, help="the problems to write (shell patterns, as the tier's only)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hiso.run").setLevel(logging.INFO)  # one line per evaluation in every job's log
    {"tune": cmd_tune, "eval": cmd_eval, "report": cmd_report, "split": cmd_split}[a.cmd](a)


if __name__ == "__main__":
    main()
