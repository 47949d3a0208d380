"""The paper's qualitative claims as numbers a results page can cite beside its own (placeholders
{{paper-claims|<claim>|min}}, ... in a readings file): each claim's range over the cells of the table it comes
from, computed from paper_results/reported.csv (the transcription of HiSo Tables 2-3), never typed in.

    claim                          cells                                   value per cell
    hiso speed-up to decomfl's best  Table 2 (3 models x SST-2/QQP/SQuAD)  DeComFL's rounds / HiSo's, to DeComFL's best
    hiso bytes over decomfl's        Table 3, where both are reported      HiSo's total communication / DeComFL's
    fedzo bytes over decomfl's       Table 3 (OPT-1.3B)                    FedZO's / DeComFL's
    fedavg bytes over decomfl's      Table 3                               FedAvg's / DeComFL's
    fedavg metric minus decomfl's    Table 3                               FedAvg's final accuracy or F1 - DeComFL's

With --tables (the tier's experiment summaries) it also writes --check: one row per experiment and claim
(placeholders {{claims-check|<experiment>: <claim>|holds}}, ...) setting the measured counterpart beside the
paper's range, so that a page says where a claim holds and where it does not from the numbers themselves:

    claim                          measured (summary table of the experiment)               holds when
    hiso speed-up to decomfl's best  hiso's `speed-up to decomfl's best` (median rounds)     > 1
    hiso bytes over decomfl's        hiso's `bytes to target over decomfl's`                 < 1
    fedzo bytes over decomfl's       fedzo's `bytes per round over decomfl's`                > 1
    fedavg bytes over decomfl's      fedavg's `bytes per round over decomfl's`               > 1
    fedavg metric minus decomfl's    FedAvg's final metric better than DeComFL's by (signed  > 0
                                     so that > 0 is better also for losses)
`range` says whether the measured value lies within, below or above the paper's cells.  The two ratios of
points reached (HiSo's speed-up, HiSo's bytes to the target) are one-sided where only one of the two methods
reached the point within the budget: a method that never reached it needs more than its whole run, so the
ratio has a bound (`bound`: "at most" / "at least", with the bound as `measured`), and `holds` is decided
where the bound decides it.  A ratio the runs cannot form or bound (neither method reached the point, or a
method is not in the experiment) is `not measured`.
"""
import argparse
import math
from pathlib import Path

import pandas as pd

from hiso.io import atomic_write

CHECKS = {  # claim -> (method, summary column or None for the metric difference, holds when)
    "hiso speed-up to decomfl's best": ("hiso", "speed-up to decomfl's best", lambda v: v > 1),
    "hiso bytes over decomfl's": ("hiso", "bytes to target over decomfl's", lambda v: v < 1),
    "fedzo bytes over decomfl's": ("fedzo", "bytes per round over decomfl's", lambda v: v > 1),
    "fedavg bytes over decomfl's": ("fedavg", "bytes per round over decomfl's", lambda v: v > 1),
    "fedavg metric minus decomfl's": ("fedavg", None, lambda v: v > 0),
}
# claims that divide two points reached: claim -> (the summary column per method, its whole-run cost, the
# ratio's numerator: "ref" for reference / method (a speed-up), "method" for method / reference)
REACHED = {
    "hiso speed-up to decomfl's best": ("rounds to decomfl's best (median)", "rounds", "ref"),
    "hiso bytes over decomfl's": ("bytes to target (median)", "bytes", "method"),
}


def claims(rep: pd.DataFrame) -> pd.DataFrame:
    rows = []

    def add(name, values, source):
        v = pd.Series(values, dtype=float).dropna()
        rows.append({"method": name, "min": v.min(), "median": v.median(), "max": v.max(), "cells": len(v),
                     "source": source})
    t2 = rep[rep.source == "HiSo Table 2"].pivot_table(index=["model", "task"], columns="method", values="value")
    add("hiso speed-up to decomfl's best", t2["decomfl"] / t2["hiso"], "HiSo Table 2")
    t3 = rep[rep.source == "HiSo Table 3"]
    comm = t3.pivot_table(index=["model", "task"], columns="method", values="comm_bytes")
    final = t3.pivot_table(index=["model", "task"], columns="method", values="value")
    for m in ("hiso", "fedzo", "fedavg"):
        add(f"{m} bytes over decomfl's", comm[m] / comm["decomfl"], "HiSo Table 3")
    add("fedavg metric minus decomfl's", final["fedavg"] - final["decomfl"], "HiSo Table 3")
    return pd.DataFrame(rows)


def measured(t: pd.DataFrame, method: str, column: str | None) -> float:
    """The experiment's counterpart of a claim (nan where the runs cannot form it)."""
    if method not in t.index:
        return math.nan
    if column is not None:
        return float(t.loc[method, column]) if column in t.columns else math.nan
    # the paper's cells are accuracy / F1: the same unit here, else nothing (a test-loss gap is not comparable)
    col = next((c for c in ("final accuracy mean", "final f1 mean", "accuracy at the end (mean)") if c in t.columns),
               None)
    if col is None or "decomfl" not in t.index:
        return math.nan
    return float(t.loc[method, col]) - float(t.loc["decomfl", col])


def unit(t: pd.DataFrame, claim: str) -> str:
    """What the experiment's counterpart of a claim is measured on (the paper: accuracy or F1)."""
    metric = next(c for c in t.columns if c.startswith("final ") and c.endswith(" mean"))[len("final "):-len(" mean")]
    if CHECKS[claim][1] is None:
        return "accuracy" if "accuracy" in metric or "accuracy at the end (mean)" in t.columns else metric
    return f"rounds / bytes to a {metric.replace('_', ' ')} point" if "rounds" in claim or "bytes" in claim else metric


def bounded(t: pd.DataFrame, method: str, claim: str) -> tuple[float, str]:
    """(bound, "at most" | "at least") where only one of method and DeComFL reached the claim's point; else
    (nan, "")."""
    if claim not in REACHED or method not in t.index or "decomfl" not in t.index:
        return math.nan, ""
    column, cost, numerator = REACHED[claim]
    if column not in t.columns:
        return math.nan, ""

    def whole_run(m):  # what a method spent in its whole run: more than it needs for a point it never reached
        rounds = float(t.loc[m, "rounds"])
        return rounds if cost == "rounds" else rounds * float(t.loc[m, "bytes per round (mean)"])
    a, ref = float(t.loc[method, column]), float(t.loc["decomfl", column])
    if math.isfinite(a) == math.isfinite(ref) or whole_run(method if math.isinf(a) else "decomfl") <= 0:
        return math.nan, ""
    if math.isinf(a):  # the method needs more than its run: its side of the ratio is bounded from below
        a, grows = whole_run(method), numerator == "method"
    else:
        ref, grows = whole_run("decomfl"), numerator == "ref"
    ratio = a / ref if numerator == "method" else ref / a
    return ratio, ("at least" if grows else "at most")


def check(paper: pd.DataFrame, summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    paper = paper.set_index("method")
    rows = []
    for exp, t in summaries.items():
        t = t.set_index("method")
        for claim, (method, column, holds) in CHECKS.items():
            v, bound = measured(t, method, column), ""
            if not math.isfinite(v):
                v, bound = bounded(t, method, claim)
            lo, hi = paper.loc[claim, "min"], paper.loc[claim, "max"]
            verdict, where = "not measured", ("neither method reached the point in the budget"
                                              if claim in REACHED and {method, "decomfl"} <= set(t.index)
                                              else "not measured")
            if math.isfinite(v) and not bound:
                verdict = "yes" if holds(v) else "no"
                where = ("below" if v < lo else "above" if v > hi else "within") + " the paper's cells"
            elif math.isfinite(v):  # one-sided: decided where both ends of the possible values agree
                far = 0.0 if bound == "at most" else math.inf
                verdict = ("yes" if holds(v) else "no") if holds(v) == holds(far) else "not measured"
                beyond = (bound == "at most" and v < lo) or (bound == "at least" and v > hi)
                where = (("below" if bound == "at most" else "above") + " the paper's cells" if beyond else
                         f"{bound} {v:.3g}; the paper's cells span {lo:.3g}-{hi:.3g}")
                missed = method if math.isinf(float(t.loc[method, REACHED[claim][0]])) else "decomfl"
                where += f"; {missed} never reached the point in its run"
            rows.append({"method": f"{exp}: {claim}", "experiment": exp, "claim": claim, "measured": v,
                         "measured on": unit(t.reset_index(), claim),
                         "bound": bound, "paper min": lo, "paper max": hi, "holds": verdict, "range": where})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reported", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--tables", nargs="*", default=[], help="experiment summaries <experiment>.csv")
    ap.add_argument("--check", help="the measured-against-claimed table (with --tables)")
    a = ap.parse_args()
    table = claims(pd.read_csv(a.reported))
    if a.check:
        checked = check(table, {Path(p).stem: pd.read_csv(p) for p in a.tables})
        atomic_write(Path(a.check), checked.to_csv(index=False))
        print(checked.to_string(index=False))
    atomic_write(Path(a.csv), table.to_csv(index=False))
    print(table.to_string(index=False))
