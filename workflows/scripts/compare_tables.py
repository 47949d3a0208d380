"""Does a committed page still hold what the code computes?  Compares every cell of the tables a fresh run wrote
(NEW) with the committed ones (OLD), except measured times; exits 1 naming the cells that differ.

    .venv/bin/snakemake --cores all --config 'only=[digits]' results=/tmp/check
    .venv/bin/python workflows/scripts/compare_tables.py docs/results/default/tables /tmp/check/pages/default/tables

NEW is the page's own tables folder (`<results>/pages/<page>/tables`): the tier's `<results>/tables` also holds
tables that are on no page (the default tier's zeta.csv), which this would report as not committed.
Every table in NEW is compared with OLD's table of the same name; numbers compare as the CSV's text, i.e. bit for
bit (the pages are written under the portable CPU numerics, docs/numerics.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

MEASURED = ("seconds", "hours")  # columns of measured time (per round, per run, a table's run and tuning hours)


def differences(old: Path, new: Path) -> list[str]:
    a = pd.read_csv(old, dtype=str, keep_default_na=False)
    b = pd.read_csv(new, dtype=str, keep_default_na=False)
    keep = [c for c in b.columns if not any(m in c for m in MEASURED)]
    out = [f"{new.name}: column {c!r} is not in the committed table" for c in keep if c not in a.columns]
    out += [f"{new.name}: column {c!r} is missing" for c in a.columns
            if c not in b.columns and not any(m in c for m in MEASURED)]
    key = b.columns[0]  # the row label: method (a summary table) or quantity
    if key not in a.columns or list(a[key]) != list(b[key]):
        return out + [f"{new.name}: rows {list(a.get(key, []))} committed, {list(b[key])} now"]
    for c in (c for c in keep if c in a.columns):
        for i in (a[c] != b[c]).to_numpy().nonzero()[0]:
            out.append(f"{new.name}: {b[key][i]} / {c}: {a[c][i]} committed, {b[c][i]} now")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path, help="the committed tables folder, e.g. docs/results/default/tables")
    ap.add_argument("new", type=Path, help="the page's tables folder a fresh run wrote, e.g. /tmp/check/pages/default/tables")
    a = ap.parse_args()
    tables = sorted(a.new.glob("*.csv"))
    if not tables:
        print(f"no tables in {a.new}", file=sys.stderr)
        return 2
    diffs = []
    for t in tables:
        committed = a.old / t.name
        diffs += differences(committed, t) if committed.exists() else [f"{t.name}: not committed in {a.old}"]
    for d in diffs:
        print(d)
    print(f"{len(tables)} table(s) compared: " + (f"{len(diffs)} difference(s)" if diffs else "every cell matches "
                                                  "except measured times"))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
