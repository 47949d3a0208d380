"""The perf tier's results page: one section per job (its command, the machine and load it ran on, its rows) under
hand-written readings that cite numbers only through {{job|column=value,...|column}} placeholders, e.g.
{{bound|model=smollm2-full|floor_P5_k1}}: the one row of that job's CSV whose columns equal those values.

    python -m bench.perf_report --perf JSON --folder DIR --md PAGE --command ... --commit ... --date ...
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hiso.io import atomic_write
from hiso.results import _sig, fill_blocks

PLACEHOLDER = re.compile(r"\{\{([^|}]+)\|([^|}]*)\|([^|}]+)\}\}")


def number(v) -> str:
    """A cell as text: integers and numbers from 1,000 up as integers with thousands separated, smaller ones with
    3 significant digits (an exponent only below 1e-4), booleans and strings as they are."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return _sig(v)


def row_of(table: pd.DataFrame, selector: str, where: str) -> pd.Series:
    """The one row of table whose columns equal the selector's values (column=value,...; "" selects a one-row
    table); KeyError naming `where` otherwise."""
    mask = pd.Series(True, index=table.index)
    for term in filter(None, (t.strip() for t in selector.split(","))):
        col, _, value = term.partition("=")
        col, value = col.strip(), value.strip()
        if col not in table.columns:
            raise KeyError(f"{where}: no column {col!r} (columns: {', '.join(table.columns)})")
        mask &= table[col].map(lambda c, value=value: str(c) == value or number(c) == value)
    if mask.sum() != 1:
        raise KeyError(f"{where}: {int(mask.sum())} rows match {selector!r}, want one")
    return table[mask].iloc[0]


def fill(text: str, tables: dict[str, pd.DataFrame], jobs) -> str:
    """Placeholders -> cells.  A block (paragraph or bullet) citing a job this run left out (a slice) is dropped;
    a job the tier does not define, a missing column or a selector matching zero or several rows is an error, so
    readings cannot cite a number the tables lack."""
    def cell(m):
        job, selector, col = (g.strip() for g in m.groups())
        where = f"readings cite {{{{{m.group(1)}|{m.group(2)}|{m.group(3)}}}}}"
        if job not in jobs:
            raise KeyError(f"{where}: {job!r} is not a job of the perf tier")
        if job not in tables:
            return None
        row = row_of(tables[job], selector, where)
        if col not in row.index:
            raise KeyError(f"{where}: no column {col!r}")
        return number(row[col])

    return fill_blocks(text, PLACEHOLDER, cell)


def command_of(meta: dict) -> str:
    args = [f"--only {meta['part']}"]
    for k in ("models", "P"):
        if meta.get(k):
            args.append(f"--{k} {','.join(map(str, meta[k]))}")
    if meta["part"] == "tier":
        args.append(f"--tier {meta['tier']} --cores {meta['cores']}")
    elif meta["part"] in ("flower", "frozen"):
        args.append(f"--rounds {meta['rounds']}")
    elif meta["part"] not in ("bytes", "memory", "clients", "dispatch"):
        args.append(f"--repeats {meta['repeats']}")
    return "python -m bench.perf " + " ".join(args)


def section(name: str, job: dict, table: pd.DataFrame, meta: dict) -> str:
    machine = f"{meta['cpus']} CPUs ({meta['cpu']})" + (f", GPU {meta['gpu']}" if meta.get("gpu") else "")
    head = (f"## {job.get('title', name)}\n\n`{command_of(meta)}` (job `{name}`, `perf/{name}.csv`): commit "
            f"{meta['commit']}, {machine}, torch {meta['torch']} on {meta['torch_threads']} thread(s), load "
            f"average {meta['load_before']:.2f} before and {meta['load_after']:.2f} after, "
            f"{_duration(meta['wall_s'])}.\n")
    shown = table.apply(lambda c: c.map(number))
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
             else "left" for c in table.columns]
    return head + "\n" + shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def page(perf: dict, folder: Path, command: str, commit: str, date: str, readings: str | None) -> str:
    """The results page from the jobs' CSVs and JSONs in `folder`."""
    jobs = perf["jobs"]
    tables = {n: pd.read_csv(folder / f"{n}.csv") for n in jobs if (folder / f"{n}.csv").exists()}
    metas = {n: json.loads((folder / f"{n}.json").read_text()) for n in tables}
    body = [f"# {perf['title']}\n\nWritten by the workflow (`{command}`) at commit {commit} on {date}; do not edit by "
            "hand. Each section names the command of its job, the commit it measured and the machine and load it "
            "ran on; its rows are the CSV beside this page. Every ratio is of two things timed alternately in one "
            "process (median of the repeats); how each part measures is in `bench/perf.py` and "
            "[../performance.md](../performance.md).\n"]
    if readings:
        body.append(fill(readings.strip(), tables, jobs) + "\n")
    body += [section(n, jobs[n], tables[n], metas[n]) for n in jobs if n in tables]
    return "\n".join(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--perf", required=True, help="the tier's perf section (JSON); the page shows the jobs in --folder")
    ap.add_argument("--folder", required=True, help="the jobs' CSV and JSON files (the page's folder)")
    ap.add_argument("--md", required=True)
    ap.add_argument("--readings", default=None)
    ap.add_argument("--command", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", required=True)
    a = ap.parse_args()
    readings = Path(a.readings).read_text() if a.readings else None
    atomic_write(a.md, page(json.loads(a.perf), Path(a.folder), a.command, a.commit, a.date, readings))


if __name__ == "__main__":
    main()
