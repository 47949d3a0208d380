"""The curvature study's report: its summary tables (medians over seeds per protocol, the share of the oracle's
round reduction each method recovers, the tuning-instance view, each method's rounds paired against DeComFL's
with the seed and rounding spreads beside them) and its results page, whose readings cite numbers only through
{{table|problem|method|column}} placeholders filled from those tables."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hiso import noise
from hiso.results import fill_blocks
from hiso.tablemd import escape_cells

REFERENCE, ORACLES = "identity (DeComFL)", ("oracle", "oracle_central", "oracle_mu_rms")  # labels (defaults)


def oracle_share(t: pd.DataFrame, budget: dict[str, float] | None = None, reference: str = REFERENCE,
                 oracles=ORACLES) -> pd.Series:
    """Per row of t (problem, method, rounds): the share of the oracle's round reduction over DeComFL it recovers,
    (DeComFL - rounds) / (DeComFL - best oracle variant).  Where DeComFL never reached the target and the round
    budget is given, DeComFL is counted at the budget: a lower bound (the share grows with DeComFL's rounds
    for any method no faster than the oracle).  NaN where undefined."""
    share = pd.Series(math.nan, index=t.index)
    for p in t.problem.unique():
        m = t.problem == p
        base = t[m & (t.method == reference)].rounds
        orc = t[m & t.method.isin(oracles)].rounds.min()
        if not len(base) or not math.isfinite(orc):
            continue
        b = base.iloc[0] if budget is None else (budget.get(p, math.nan) if math.isinf(base.iloc[0]) else math.nan)
        if math.isfinite(b) and b > orc:
            share[m] = ((b - t[m].rounds) / (b - orc)).where(t[m].rounds < math.inf)
    return share


def with_oracle_shares(t: pd.DataFrame, budgets: dict[str, float], **kw) -> pd.DataFrame:
    """t with oracle_gain_lower_bound (only where DeComFL never reached the target) and oracle_gain_recovered."""
    return t.assign(oracle_gain_lower_bound=oracle_share(t, budgets, **kw), oracle_gain_recovered=oracle_share(t, **kw))


def _log_rounds(rows: pd.DataFrame) -> pd.Series:
    """seed -> log10 of the rounds to target (inf where the target was never reached)."""
    return np.log10(rows.set_index("seed")["rounds"].astype(float))


def _rounding_spread(runs: pd.Series, twins: pd.Series) -> tuple[float, int]:
    """(mean |log10 rounds(twin) - log10 rounds(run)| over the seeds with a twin, their number): 0 where neither
    reached the target, inf where only one did; NaN when no twin ran."""
    gaps = []
    for seed, t in twins.items():
        if seed in runs.index:
            r = runs[seed]
            gaps.append(0.0 if (math.isinf(r) and math.isinf(t)) else abs(t - r))
    return (float(np.mean(gaps)) if gaps else math.nan), len(gaps)


def _censored(a: pd.Series, ref: pd.Series) -> str:
    """The claim of seed pairs some of which never reached the target: who missed it, in how many pairs."""
    miss_a, miss_ref = np.isinf(a.to_numpy()), np.isinf(ref.to_numpy())
    parts = [(int((miss_a & miss_ref).sum()), "neither reached the target"),
             (int((~miss_a & miss_ref).sum()), "only this method did"),
             (int((miss_a & ~miss_ref).sum()), "only the reference did")]
    return f"censored: of {len(a)} seed pairs, " + ", ".join(f"{n} {what}" for n, what in parts if n)


def _bound_claim(verdict: str, a: pd.Series, ref: pd.Series, budget: float) -> str:
    """The claim of seed pairs censored in one direction, each missing run counted at the round budget (a lower
    bound on its rounds): only the direction the bound makes conservative is claimed (a method faster although
    DeComFL's misses count at the budget; slower although its own do)."""
    miss_a, miss_ref = np.isinf(a.to_numpy()), np.isinf(ref.to_numpy())
    neither = int((miss_a & miss_ref).sum())
    left_out = f"; {neither} pair{'s' * (neither != 1)} where neither reached the target left out" if neither else ""
    who, n, allowed = (("DeComFL's", int((~miss_a & miss_ref).sum()), "better") if (miss_ref & ~miss_a).any()
                       else ("this method's", int((miss_a & ~miss_ref).sum()), "worse"))
    bound = f"{n} of {who} runs that never reached the target counted at the {budget:,.0f}-round budget"
    if verdict.split(" ")[0] == allowed:
        return f"{verdict} (a bound: {bound}{left_out})"
    return f"{_censored(a, ref)}: with {bound}, the bound does not decide{left_out}"


def paired_rounds(ev: pd.DataFrame, reference: str = REFERENCE, budgets: dict | None = None) -> pd.DataFrame:
    """Each tuned method's rounds to target against the reference's (DeComFL) over the seeds both ran, on a log
    scale (rounds spread over decades): the geometric-mean ratio with its 95 % t interval, the seed spread (the
    larger std over seeds of log10 rounds of the two), the rounding spread (the larger of the two; from the
    "rounding twin" rows, NaN where none ran) and the claim hiso.noise.verdict allows.
    A pair where a run never reached the target is censored.  Given the problem's round budget (`budgets`: label
    -> rounds) and censoring in one direction only, each missing run counts at the budget (its rounds are at least
    that), pairs where neither run reached it are left out, and the ratio is a bound (`at_budget` counts the runs
    counted so): its claim is made only in the direction the bound makes conservative.  Otherwise the ratio is
    over the pairs both reached and the claim says "censored", as a bound cannot decide it."""
    tuned, twins = ev[ev.protocol == "tuned"], ev[ev.protocol == "rounding twin"]
    budgets = budgets or {}
    rows = []
    for problem, sub in tuned.groupby("problem", sort=False):
        logs = {m: _log_rounds(g) for m, g in sub.groupby("method", sort=False)}
        if reference not in logs:
            continue
        tw = {m: _log_rounds(g) for m, g in twins[twins.problem == problem].groupby("method")}
        spread = {m: _rounding_spread(logs[m], tw[m]) if m in tw else (math.nan, 0) for m in logs}
        ref = logs[reference]
        budget = budgets.get(str(problem).strip())
        for method, a in logs.items():
            common = a.index.intersection(ref.index)
            miss_a, miss_ref = np.isinf(a[common]), np.isinf(ref[common])
            one_way = not ((miss_a & ~miss_ref).any() and (miss_ref & ~miss_a).any())
            bounded = budget is not None and one_way and (miss_a ^ miss_ref).any()
            if bounded:  # a missing run at the budget: log10 of a lower bound on its rounds
                use = [s for s in common if not (miss_a[s] and miss_ref[s])]
                at_b, ref_b = a.clip(upper=math.log10(budget)), ref.clip(upper=math.log10(budget))
            else:
                use = [s for s in common if not (miss_a[s] or miss_ref[s])]
                at_b, ref_b = a, ref
            per_seed = pd.DataFrame([{"method": m, "seed": s, "final": x[s]} for m, x in ((method, at_b), ("ref", ref_b))
                                     for s in use])
            d = noise.paired(per_seed, method, "ref") if use else {"n": 0, "mean": math.nan, "lo": math.nan,
                                                                    "hi": math.nan}
            stds = [x[np.isfinite(x)].std(ddof=1) for x in (a, ref) if np.isfinite(x).sum() > 1]
            seed_spread = float(max(stds)) if stds else math.nan
            rs = [spread[m][0] for m in (method, reference) if not math.isnan(spread[m][0])]
            round_spread = max(rs) if rs else math.nan
            censored = int((miss_a | miss_ref).sum())
            verdict = noise.verdict(d, 0.0 if math.isnan(seed_spread) else seed_spread, round_spread, False)
            verdict = verdict.replace("interval contains 0", "interval of the ratio contains 1")
            if method == reference:
                claim = "reference"
            elif bounded:
                claim = _bound_claim(verdict, a[common], ref[common], budget)
            elif censored:
                claim = _censored(a[common], ref[common])
            else:
                claim = verdict
            rows.append({"problem": problem, "method": method, "pairs": d["n"], "censored": censored,
                         "at_budget": int((miss_a ^ miss_ref).sum()) if bounded else 0,
                         "rounds_ratio": 10 ** d["mean"], "ratio_ci_low": 10 ** d["lo"],
                         "ratio_ci_high": 10 ** d["hi"], "seed_spread_log10": seed_spread,
                         "rounding_spread_log10": round_spread, "rounding_pairs": spread[method][1], "claim": claim})
    return pd.DataFrame(rows)


def summary_tables(ev: pd.DataFrame, tuning_rows: pd.DataFrame | None = None, budgets: dict | None = None,
                   **kw) -> dict[str, pd.DataFrame]:
    """The study's tables: medians over the test seeds per protocol ("tuned", "equal lr") and, given the tuning
    rows, "tuning instance": each tuned method's run on the tuning instance at its chosen lr, where every
    method's lr is best by construction (so DeComFL's lr not carrying over to the test instances cannot
    flatter the others)."""
    tables, budgets = {}, budgets or {}
    for protocol in ("tuned", "equal lr"):
        sub = ev[ev.protocol == protocol]
        if sub.empty:
            continue
        mixed = sub.groupby(["problem", "method"]).lr.nunique()
        if (mixed > 1).any():  # e.g. a re-tuned method whose runs at its old step size are still in the CSV
            raise ValueError(f"{protocol} runs at more than one lr for {list(mixed[mixed > 1].index)}: "
                             f"remove the stale rows from the eval CSV")
        agg = {"lr": ("lr", "first"), "rounds": ("rounds", "median"), "rounds_per_seed": ("rounds", list),
               "forward_passes": ("forward_passes", "median"), "bytes": ("bytes", "median"),
               "final_median": ("final", "median")}
        if protocol == "tuned":  # agreement with the true diagonal, where it was measured
            agg.update({k: (c, "median") for k, c in (("spearman", "H_spearman"), ("log10_scale", "H_log10_scale"),
                                                      ("log10_spread", "H_log10_spread"), ("zeta", "H_zeta"),
                                                      ("eff_rank_whitened", "H_eff_rank_whitened"))
                        if c in sub.columns})
        t = sub.groupby(["problem", "method"], sort=False).agg(**agg).reset_index()
        if protocol == "tuned":  # share of the oracle's round reduction over DeComFL that each method recovers
            t = with_oracle_shares(t, budgets, **kw)
            if tuning_rows is not None and not tuning_rows.empty:
                rows = t[["problem", "method", "lr"]].merge(
                    tuning_rows[["problem", "method", "lr", "rounds", "final"]], on=["problem", "method", "lr"],
                    how="left")
                tables["tuning instance"] = with_oracle_shares(rows, budgets, **kw)
            tables["paired"] = paired_rounds(ev, kw.get("reference", REFERENCE), budgets)
        tables[protocol] = t
    return tables


TITLES = {"tuned": "tuned: median over seeds (rounds, forward passes, bytes to target)",
          "paired": "paired against DeComFL: rounds to target over the seeds both ran (ratio = geometric mean of "
                    "rounds / DeComFL's, 95 % t interval; spreads in log10 rounds; a claim only where the interval "
                    "excludes 1 and the difference exceeds both spreads; where only one side of some pairs never "
                    "reached the target, those runs count at the round budget (at_budget), the ratio is a bound and "
                    "only the claim it makes conservative is made)",
          "tuning instance": "tuning instance (the tuning seed) at each method's chosen lr",
          "equal lr": "equal lr: median over seeds (rounds, forward passes, bytes to target)"}


def summarise(ev: pd.DataFrame, tuning_rows: pd.DataFrame | None = None, **kw) -> str:
    """summary_tables as markdown."""
    tables = {k: escape_cells(t) for k, t in summary_tables(ev, tuning_rows, **kw).items()}
    return "\n".join(f"## {TITLES[k]}\n\n{tables[k].to_markdown(index=False, floatfmt='.3g')}\n"
                     for k in TITLES if k in tables)


PLACEHOLDER = re.compile(r"\{\{([^|}]+)\|([^|}]+)\|([^|}]+)\|([^}]+)\}\}")


def fill(text: str, tables: dict[str, pd.DataFrame], problems=(), methods=()) -> str:
    """{{table|problem|method|column}} -> that cell with 3 significant digits (counts stay counts, "never" for an
    unreached target).  A block (paragraph or bullet) citing a problem or method that this run left out (a
    slice) is dropped; any other unknown cell is an error, so readings cannot cite a number the tables lack."""
    def cell(m):
        table, problem, method, col = (g.strip() for g in m.groups())
        if problem not in problems or method not in methods:
            raise KeyError(f"readings cite {problem!r} / {method!r}: not a problem and method of the study")
        t = tables.get(table)
        if t is None or not ((t.problem == problem) & (t.method == method)).any():
            return None  # left out of this run
        if col not in t.columns:
            raise KeyError(f"readings cite {table} / {problem} / {method} / {col!r}: no such column")
        v = t[(t.problem == problem) & (t.method == method)][col].iloc[0]
        if not isinstance(v, (int, float, np.floating, np.integer)):
            return str(v)
        v = float(v)
        if math.isinf(v):
            return "never"
        return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.3g}"

    return fill_blocks(text, PLACEHOLDER, cell)


def page(study: dict, csv_dir: Path, figure_rel: str, command: str, commit: str, date: str,
         readings: str | None) -> str:
    """The results page: header with provenance, the readings (placeholders filled from the tables), the
    agreement figure and the summary tables."""
    ev = pd.read_csv(csv_dir / "eval.csv", keep_default_na=False, na_values=[""])
    tu = pd.read_csv(csv_dir / "tuning.csv", keep_default_na=False, na_values=[""])
    labels = {m: v["label"] for m, v in study["methods"].items()}
    budgets = {p["label"]: p["rounds"] for p in study["problems"].values()}
    kw = {"reference": labels[study["reference"]], "oracles": [labels[m] for m in study.get("oracles", [])]}
    head = (f"# {study['title']}\n\nWritten by the workflow (`{command}`) at commit {commit} on {date}; do not edit "
            "by hand. Every run is a row of the CSV files beside this page (`curvature/eval.csv`, "
            "`curvature/tuning.csv`); `python -m bench.curvature_study split` replays them into a results folder.\n")
    body = [head]
    if readings:
        body.append(fill(readings.strip(), summary_tables(ev, tu, budgets=budgets, **kw), budgets,
                         set(labels.values())) + "\n")
    body.append(f"![learned vs true curvature]({figure_rel})\n")
    body.append(summarise(ev, tu, budgets=budgets, **kw))
    return "\n".join(body)
