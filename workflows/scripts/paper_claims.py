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
`range` says whether the measured value lies within, below or above the paper's cells; a ratio that the runs
cannot form (a method never reached the target, or is not in the experiment) is `not measured`.
"""
import argparse
import math
from pathlib import Path

import pandas as pd

from hiso.io import atomic_write
from hiso.results import HIGHER_IS_BETTER

CHECKS = {  # claim -> (method, summary column or None for the metric difference, holds when)
    "hiso speed-up to decomfl's best": ("hiso", "speed-up to decomfl's best", lambda v: v > 1),
    "hiso bytes over decomfl's": ("hiso", "bytes to target over decomfl's", lambda v: v < 1),
    "fedzo bytes over decomfl's": ("fedzo", "bytes per round over decomfl's", lambda v: v > 1),
    "fedavg bytes over decomfl's": ("fedavg", "bytes per round over decomfl's", lambda v: v > 1),
    "fedavg metric minus decomfl's": ("fedavg", None, lambda v: v > 0),
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
    col = next(c for c in t.columns if c.startswith("final ") and c.endswith(" mean"))
    if "decomfl" not in t.index:
        return math.nan
    sign = 1.0 if HIGHER_IS_BETTER.get(col[len("final "):-len(" mean")], True) else -1.0
    return sign * (float(t.loc[method, col]) - float(t.loc["decomfl", col]))


def check(paper: pd.DataFrame, summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    paper = paper.set_index("method")
    rows = []
    for exp, t in summaries.items():
        t = t.set_index("method")
        for claim, (method, column, holds) in CHECKS.items():
            v = measured(t, method, column)
            lo, hi = paper.loc[claim, "min"], paper.loc[claim, "max"]
            ok = math.isfinite(v)
            rows.append({"method": f"{exp}: {claim}", "experiment": exp, "claim": claim, "measured": v,
                         "paper min": lo, "paper max": hi,
                         "holds": ("yes" if holds(v) else "no") if ok else "not measured",
                         "range": (("below" if v < lo else "above" if v > hi else "within") + " the paper's cells")
                         if ok else "not measured"})
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
