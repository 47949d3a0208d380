"""The paper's qualitative claims as numbers a results page can cite beside its own (placeholders
{{paper-claims|<claim>|min}}, ... in a readings file): each claim's range over the cells of the table it comes
from, computed from paper_results/reported.csv (the transcription of HiSo Tables 2-3), never typed in.

    claim                          cells                                   value per cell
    hiso speed-up to decomfl's best  Table 2 (3 models x SST-2/QQP/SQuAD)  DeComFL's rounds / HiSo's, to DeComFL's best
    hiso bytes over decomfl's        Table 3, where both are reported      HiSo's total communication / DeComFL's
    fedzo bytes over decomfl's       Table 3 (OPT-1.3B)                    FedZO's / DeComFL's
    fedavg bytes over decomfl's      Table 3                               FedAvg's / DeComFL's
    fedavg metric minus decomfl's    Table 3                               FedAvg's final accuracy or F1 - DeComFL's
"""
import argparse
from pathlib import Path

import pandas as pd

from hiso.io import atomic_write


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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reported", required=True)
    ap.add_argument("--csv", required=True)
    a = ap.parse_args()
    table = claims(pd.read_csv(a.reported))
    atomic_write(Path(a.csv), table.to_csv(index=False))
    print(table.to_string(index=False))
