"""Reading finished runs back: one long DataFrame, cumulative bytes, rounds-to-target, summaries.

Layout read: <root>/<method>/seed<k>/metrics.csv (what the workflow writes).  Tables and figures use only
these functions, so every number they show comes from the runs' own metrics.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .noise import finals, noise_columns, split_twins
from .tablemd import ALSO, _count, _sig, compact_markdown, compact_view, edge_choices  # noqa: F401  (re-exported)
from .tuning import scored_by


def _directions() -> dict[str, bool]:
    """metric -> higher is better, as the registered tasks declare it (their `metric` / `higher_is_better`, and
    `directions` for their secondary metrics)."""
    from .registry import tasks
    TASKS = tasks()
    out = {"test_loss": False}
    for cls in TASKS.values():
        out.update(getattr(cls, "directions", {}))
        out[cls.metric] = cls.higher_is_better
    return out


HIGHER_IS_BETTER = _directions()


# per-round columns of measured time: never reproduced, so never compared bit for bit
MEASURED = ("wall_seconds", "cpu_seconds")


def reproducible(metrics: pd.DataFrame) -> pd.DataFrame:
    """A run's metrics without its measured times: what the same config and seed give bit for bit anywhere."""
    return metrics.drop(columns=[c for c in MEASURED if c in metrics.columns])


def cpu_split(runs: pd.DataFrame) -> tuple[float, float]:
    """(process CPU seconds of the rounds that measured it, wall seconds of the rounds that did not): rows written
    before the runner recorded cpu_seconds have only their wall time, which a shared machine inflates, so the two
    are summed apart and never added up as CPU time."""
    wall = runs["wall_seconds"]
    if "cpu_seconds" not in runs.columns:
        return 0.0, float(wall.sum())
    cpu = runs["cpu_seconds"]
    return float(cpu.sum()), float(wall[cpu.isna()].sum())


def load_runs(root: str | Path | None = None, paths=None) -> pd.DataFrame:
    """The runs' metrics.csv (`paths`, each <method>/seed<k>/metrics.csv; else every one under `root`) as one
    frame with `method`, `seed` and cumulative columns added."""
    if root is None and paths is None:
        raise ValueError("load_runs needs a root folder or a list of metrics.csv paths")
    frames = []
    paths = sorted(Path(root).glob("*/seed*/metrics.csv")) if paths is None else [Path(p) for p in paths]
    for path in paths:
        df = pd.read_csv(path)
        df["method"] = path.parent.parent.name
        df["seed"] = int(path.parent.name.removeprefix("seed"))
        info = path.parent / "run.json"
        meta = json.loads(info.read_text()) if info.exists() else {}
        df["status"] = meta.get("status", "unknown")
        for key, value in (meta.get("initial_eval") or {}).items():  # the starting model (round 0)
            df[f"initial {key}"] = value
            if key not in df:  # a run that diverged before its first evaluation still has the metric's column
                df[key] = math.nan
        df["mixed_code"] = len(_codes_that_ran_rounds(meta)) > 1  # resumed under other code than it started with
        df["bytes_total"] = df["bytes_up"] + df["bytes_down"]
        for col in ("bytes_total", "bytes_up", "bytes_down", "forward_passes", "wall_seconds"):
            df[f"cum_{col}"] = df[col].cumsum()
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no runs found under {root or paths} (expected <method>/seed<k>/metrics.csv)")
    return pd.concat(frames, ignore_index=True)


def _codes_that_ran_rounds(meta: dict) -> set:
    """The (commit, packages) of run.json's segments that computed at least one round: a process that reopened
    a finished run, or stopped before its first round, computed nothing under its code."""
    segs = meta.get("segments", [])
    ends = [s.get("from_round", 0) for s in segs[1:]] + [meta.get("rounds_done", float("inf"))]
    return {(s.get("git_sha"), json.dumps(s.get("packages"), sort_keys=True))
            for s, end in zip(segs, ends) if s.get("from_round", 0) < end}


def reached(values, metric: str, target: float):
    """Whether each value (a Series or one number) has reached the target, in the metric's direction."""
    return values >= target if HIGHER_IS_BETTER.get(metric, True) else values <= target


def to_target(run: pd.DataFrame, metric: str, target: float) -> dict:
    """First evaluated round at which `metric` reaches `target`, with the cumulative cost at that round
    (inf when never reached)."""
    ev = run.dropna(subset=[metric])
    hit = ev[reached(ev[metric], metric, target)]
    if hit.empty:
        return {"rounds": math.inf, "bytes": math.inf, "forward_passes": math.inf, "seconds": math.inf}
    row = hit.iloc[0]
    return {"rounds": int(row["round"]), "bytes": int(row["cum_bytes_total"]),
            "forward_passes": int(row["cum_forward_passes"]), "seconds": float(row["cum_wall_seconds"])}


def to_hold(run: pd.DataFrame, metric: str, target: float) -> dict:
    """First evaluated round from which `metric` stays at the target through the run's last evaluation, with
    the cumulative cost at that round (inf when the last evaluation misses it): a run that reaches the target
    and leaves it again has not reached it."""
    ev = run.dropna(subset=[metric])
    missed = ev[~reached(ev[metric], metric, target)]
    after = ev if missed.empty else ev[ev["round"] > missed["round"].max()]
    return to_target(after, metric, target)


def best_of(run: pd.DataFrame, metric: str) -> float:
    """The best evaluated value of one run (max accuracy / min suboptimality)."""
    ev = run[metric].dropna()
    if ev.empty:
        return math.nan
    return float(ev.max() if HIGHER_IS_BETTER.get(metric, True) else ev.min())


def rounds_to_best(run: pd.DataFrame, metric: str) -> float:
    """First evaluated round at which a run attains its best evaluated value (its "convergence" round, the
    reading of the paper's "communication to convergence" this suite uses)."""
    best = best_of(run, metric)
    if math.isnan(best):
        return math.nan
    ev = run.dropna(subset=[metric])
    return float(ev.loc[ev[metric] == best, "round"].iloc[0])


def payload_per_client_round(run: pd.DataFrame) -> float:
    """The paper's byte convention for one client and round: its uploaded scalars (or vector) twice, i.e.
    as many down as up (2 tau P x 4 B for DeComFL / HiSo; 2 d x 4 B for FedAvg / FedZO); headers, seeds and
    catch-up excluded.  Measured `bytes_up_scalars` over the uploads it counts (nan for metrics without them)."""
    if not {"bytes_up_scalars", "accepted", "rejected"} <= set(run.columns):
        return math.nan
    uploads = (run["accepted"] + run["rejected"]).clip(lower=1)
    return float((2 * run["bytes_up_scalars"] / uploads).mean())


def per_client_round(run: pd.DataFrame) -> dict[str, float]:
    """Measured wire bytes one sampled client sends and receives per round (headers, seeds and catch-up
    included), up and down apart: the mean over rounds of the round's bytes over its uploads."""
    if not {"bytes_up", "bytes_down", "accepted", "rejected"} <= set(run.columns):
        return {}
    uploads = (run["accepted"] + run["rejected"]).clip(lower=1)
    return {"up bytes per client-round": float((run["bytes_up"] / uploads).mean()),
            "down bytes per client-round": float((run["bytes_down"] / uploads).mean())}


def summarise(runs: pd.DataFrame, metric: str, target: float, reference: str = "decomfl",
              tuning_seed: int | None = None) -> pd.DataFrame:
    """One row per method: final metric mean/std over seeds and median cost to the target; with a reference
    method (DeComFL) present, also the paper's Table 2 metric: rounds / bytes for the method to reach the
    reference's best value of the same seed.  Methods named "<family>@<lr>" (a step-size grid) get their
    family and lr, and `best lr` marks the family's best: fewest rounds to target, then best final metric, on
    the tuning run (seed `tuning_seed`, evaluated on the dev split) when there is one, else (older results)
    the median over the reported seeds, as `lr chosen on` says.  Tuning runs enter no reported statistic."""
    from .noise import TWIN
    # compute spent: every run of a method (its tuning run and rounding twin included), hours of wall time at the
    # run's one thread (per-round wall_seconds summed; an evaluation is part of its round), and of process CPU time
    # where the runs measured it (cpu_seconds: what other jobs sharing the machine cannot inflate)
    fams = runs.assign(fam=runs["method"].str.removesuffix(TWIN)).groupby("fam")
    hours = fams["wall_seconds"].sum() / 3600
    cpu_hours = {m: [x / 3600 for x in cpu_split(g)] for m, g in fams}  # [CPU measured, wall where not]
    runs, twins = split_twins(runs)  # rounding twins (hiso/noise.py) enter only the rounding spread
    sign = -1 if HIGHER_IS_BETTER.get(metric, True) else 1  # sorts the better final value first
    tuning = {}
    if tuning_seed is not None:
        for method, run in runs[runs.seed == tuning_seed].groupby("method", sort=False):
            run = run.sort_values("round")
            final = math.nan if run["status"].iloc[0] == "diverged" else run[metric].dropna().iloc[-1]
            tuning[method] = {"rounds": to_target(run, metric, target)["rounds"], "final": final}
        runs = runs[runs.seed != tuning_seed]
    refs = {}
    candidates = [m for m in runs["method"].unique() if m.split("@")[0] == reference]
    if tuning and candidates:  # the reference at the step size its tuning run chose
        candidates.sort(key=lambda m: (tuning.get(m, {}).get("rounds", math.inf),
                                       _or_inf(sign * tuning.get(m, {}).get("final", math.nan))))
    ref_name = candidates[0] if candidates else None
    if ref_name is not None:
        refs = {s: best_of(r.sort_values("round"), metric) for s, r in runs[runs.method == ref_name].groupby("seed")}
    rows = []
    for method, grp in runs.groupby("method", sort=False):
        finals, costs, to_ref, to_best = [], [], [], []
        diverged = 0
        mixed = int(grp.groupby("seed")["mixed_code"].first().sum()) if "mixed_code" in grp else 0
        for seed, run in grp.groupby("seed"):
            run = run.sort_values("round")
            if seed in refs and not math.isnan(refs[seed]):
                to_ref.append(to_target(run, metric, refs[seed]))
            if run["status"].iloc[0] == "diverged":
                diverged += 1
                finals.append(math.nan)  # no final model: the run stopped
            else:
                finals.append(run[metric].dropna().iloc[-1])
            costs.append(to_target(run, metric, target))
            to_best.append(rounds_to_best(run, metric))
        c = pd.DataFrame(costs)
        last = grp[grp["round"] == grp["round"].max()]
        ok = [f for f in finals if not math.isnan(f)]
        rows.append({"method": method, "seeds": len(finals), "seeds diverged": diverged,
                     f"final {metric} mean": float(np.mean(ok)) if ok else math.nan,
                     f"final {metric} std": float(np.std(ok, ddof=1)) if len(ok) > 1 else math.nan,
                     "seeds reaching target": int(np.isfinite(c["rounds"]).sum()),
                     "rounds to target (median)": float(c["rounds"].median()),
                     "rounds to target (min)": float(c["rounds"].min()),
                     "rounds to target (max)": float(c["rounds"].max()),
                     "bytes to target (median)": float(c["bytes"].median()),
                     "forward passes to target (median)": float(c["forward_passes"].median()),
                     "bytes per round (mean)": float(grp["bytes_total"].mean()),
                     "rounds": int(last["round"].iloc[0]),
                     "rounds to best (median)": float(np.nanmedian(to_best)) if ok else math.nan,
                     f"initial {metric} mean": (float(grp.groupby("seed")[f"initial {metric}"].first().mean())
                                                if f"initial {metric}" in grp else math.nan),
                     "payload bytes per client-round": payload_per_client_round(grp),
                     **per_client_round(grp),
                     # measured cost: a round's seconds include its evaluation; a run's, every round's
                     "seconds per round (mean)": float(grp["wall_seconds"].mean()),
                     "seconds per run (median)": float(grp.groupby("seed")["wall_seconds"].sum().median()),
                     "run hours": float(hours.get(method, math.nan)),
                     **({"run CPU hours": cpu_hours[method][0], "run hours without CPU time": cpu_hours[method][1]}
                        if "cpu_seconds" in runs else {})})
        rows[-1].update(_also(grp, metric))
        if mixed:  # only shown where it happened: such a seed's rounds ran under two code versions
            rows[-1]["seeds resumed under other code"] = mixed
        if refs:
            r = pd.DataFrame(to_ref) if to_ref else pd.DataFrame({"rounds": [math.inf], "bytes": [math.inf]})
            rows[-1][f"rounds to {ref_name}'s best (median)"] = float(r["rounds"].median())
            rows[-1][f"bytes to {ref_name}'s best (median)"] = float(r["bytes"].median())
        if tuning:
            rows[-1]["tuning rounds to target"] = tuning.get(method, {}).get("rounds", math.nan)
            rows[-1][f"tuning final {metric}"] = tuning.get(method, {}).get("final", math.nan)
    out = pd.DataFrame(rows)
    if refs and ref_name in set(out["method"]):  # the paper's ratios against the reference (DeComFL) at a glance
        ref = out.set_index("method").loc[ref_name]
        best, target = f"rounds to {ref_name}'s best (median)", "rounds to target (median)"
        out[f"speed-up to {ref_name}'s best"] = [_ratio(ref[best], x) for x in out[best]]
        out[f"speed-up to target over {ref_name}"] = [_ratio(ref[target], x) for x in out[target]]
        for col in ("bytes per round (mean)", "bytes to target (median)"):
            name = col.split(" (")[0]
            out[f"{name} over {ref_name}'s"] = [_ratio(x, ref[col]) for x in out[col]]
    fam = out["method"].str.split("@").str[0]
    if (fam != out["method"]).any():
        out.insert(1, "family", fam)
        out.insert(2, "lr", pd.to_numeric(out["method"].str.split("@").str[1], errors="coerce"))
        on_tuning = bool(tuning)
        r_col, f_col = (("tuning rounds to target", f"tuning final {metric}") if on_tuning
                        else ("rounds to target (median)", f"final {metric} mean"))
        order = pd.DataFrame({"fam": fam, "r": out[r_col].fillna(math.inf),
                              "f": (sign * out[f_col]).fillna(math.inf)}).sort_values(["r", "f"], kind="stable")
        out["best lr"] = False
        out.loc[order.groupby("fam").head(1).index, "best lr"] = True
        gridded = out["method"].str.contains("@", regex=False)
        lrs = out[gridded].groupby("family")["lr"]
        low, high, size = out["family"].map(lrs.min()), out["family"].map(lrs.max()), out["family"].map(lrs.size())
        # a choice at the smallest or largest step size of its grid: the best may lie outside it
        out["lr at grid edge"] = (out["best lr"] & gridded & (size > 1)
                                  & ((out["lr"] == low) | (out["lr"] == high))).astype(bool)
        out["lr chosen on"] = f"tuning seed {tuning_seed} (dev split)" if on_tuning else "reported seeds"
        out.loc[~gridded, "lr chosen on"] = "fixed in the config"
    return noise_columns(out, runs, twins, metric, ref_name, sign < 0)


def attach_choices(table: pd.DataFrame, choices: dict[str, dict],
                   tuning_rounds: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The step size each method's tuning job chose (`choose-lr` / `scan-lr` JSON, by method) as columns: `chosen
    lr`, `lrs tried` ("lr: rounds to target on the dev split", in order of step size) and `lr at grid edge`
    (still at an edge of what was tried).  The compute of a scan's tuning runs (`tuning hours`, `tuning CPU hours`,
    `tuning hours without CPU time`, as cpu_split) comes from their per-round metrics where `tuning_rounds` has
    them (method -> load_runs rows), else from the per-run sums in the JSON; from the rows also `tuning runs
    resumed under other code` (how many of them)."""
    out = table.copy()
    if "lr at grid edge" not in out.columns:
        out["lr at grid edge"] = False
    for col in ("chosen lr", "lrs tried"):
        out[col] = pd.Series([math.nan] * len(out), dtype=object)
    for i, method in out["method"].items():
        c = choices.get(method)
        if c is None:
            continue
        out.at[i, "chosen lr"] = float(c["sets"]["federation.lr"])
        tried = []
        for g in sorted(c["grid"], key=lambda g: g["lr"]):
            if "score" in g:  # the full-grid protocol: the mean over tuning seeds of what scored it (scan_grid)
                r = "diverged" if g.get("diverged") else f"{g[scored_by(c)['point']]:.4g}"
            else:
                r = "diverged" if g.get("diverged") else _count(math.inf if g["rounds_to_target"] is None
                                                                else g["rounds_to_target"])
            tried.append(f"{g['lr']:g}: {r}" + (" (extended)" if g.get("note") == "extended" else ""))
        out.at[i, "lrs tried"] = "; ".join(tried)
        rounds = (tuning_rounds or {}).get(method)
        if rounds is None and c.get("runs") and all("wall_seconds" in r for r in c["runs"]):
            rounds = pd.DataFrame(c["runs"])  # per-run sums in the scan's JSON (hiso/scan.py)
        if rounds is not None:  # the full-grid protocol's tuning runs
            out.loc[i, "tuning hours"] = rounds["wall_seconds"].sum() / 3600
            if "wall_seconds_without_cpu" in rounds:  # the JSON's sums, already split
                split = rounds["cpu_seconds"].sum(), rounds["wall_seconds_without_cpu"].sum()
            else:
                split = cpu_split(rounds) if "cpu_seconds" in rounds else None
            if split is not None:
                out.loc[i, "tuning CPU hours"], out.loc[i, "tuning hours without CPU time"] = (x / 3600 for x in split)
        if rounds is not None and "mixed_code" in rounds:  # 0 too: the readings may cite it
            out.loc[i, "tuning runs resumed under other code"] = \
                int(rounds.groupby(["method", "seed"])["mixed_code"].first().sum())
        out.loc[i, "lr at grid edge"] = bool(c.get("at_grid_edge", False))
    return out


def _also(grp: pd.DataFrame, metric: str) -> dict:
    """The other text metric at each seed's last evaluation (diverged seeds left out), as `<m> at the end`."""
    out = {}
    for m in ALSO:
        if m == metric or m not in grp or grp[m].isna().all():
            continue
        ends = finals(grp, m)["final"].dropna()
        out[f"{m} at the end (mean)"] = float(ends.mean()) if len(ends) else math.nan
        out[f"{m} at the end (std)"] = float(ends.std(ddof=1)) if len(ends) > 1 else math.nan
    return out


def _ratio(a: float, b: float) -> float:
    """a / b, nan unless both are finite and b is not 0 (a count never reached has no ratio)."""
    return float(a) / float(b) if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def _or_inf(x: float) -> float:
    return math.inf if math.isnan(x) else x


def at_chosen_lr(table: pd.DataFrame) -> pd.DataFrame:
    """A summary table's rows at the step size each tuning run chose, and the rows of fixed step sizes (a table
    without step-size grids is returned whole)."""
    if "best lr" not in table.columns:
        return table
    return table[table["best lr"].astype(bool) | table["lr"].isna()]


def provenance_line(metrics_paths) -> str:
    """Which code and configs produced the runs behind a table (from their run.json)."""
    shas, hashes, dirty = set(), set(), False
    for path in metrics_paths:
        info = Path(path).parent / "run.json"
        if info.exists():
            meta = json.loads(info.read_text())
            shas.add(str(meta.get("git_sha", ""))[:10])
            hashes.add(meta.get("config_hash", ""))
            dirty |= bool(meta.get("git_dirty"))
    commits = ", ".join(sorted(s for s in shas if s)) or "unknown"
    return (f"Provenance: {len(metrics_paths)} runs, {len(hashes)} configs (hashes in each run.json), "
            f"commit {commits}{' with uncommitted changes' if dirty else ''}.")


def fill_blocks(text: str, pattern, cell) -> str:
    """Each match of `pattern` in the readings -> cell(match).  A block (paragraph or bullet) with a match whose
    cell is None, a problem or job that a sliced run left out, is dropped whole, so that no sentence loses a
    number; `cell` raises for a citation the tables can never hold, unless its block is dropped anyway (a column
    such as `claim vs decomfl` exists only where the sliced-out reference ran)."""
    out = []
    for block in re.split(r"\n(?=- |\n)", text):
        values, errors = [], []
        for m in pattern.finditer(block):
            try:
                values.append(cell(m))
            except KeyError as e:
                errors.append(e)
        if None in values:
            continue
        if errors:
            raise errors[0]
        it = iter(values)
        out.append(pattern.sub(lambda _: next(it), block))
    return "\n".join(out)
