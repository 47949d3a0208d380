"""A results page (Markdown) written by the workflow, never by hand: every experiment's compact table and
convergence figure, every sweep figure, and the tier's readings (a small hand-written file whose numbers are
placeholders this script fills from the tables).

    python workflows/scripts/results_page.py --name NAME --title TITLE --tables DIR --figures DIR
        --experiments EXP ... [--sweeps NAME ...] [--readings FILE] --command CMD --commit SHA --date DATE --md OUT

Placeholders in the readings: {{experiment|method|column}}, e.g. {{byz-f1|median|final rel_suboptimality mean}};
a method written `hiso*` is that family's row at the step size its tuning run chose (experiments with lr grids).
Values are formatted with 3 significant digits ("not reached" for an infinite count) (an unknown cell is an error, so a reading cannot cite a number the tables
lack).  The same inputs give the same page: rerender_pages.py re-renders each committed page from its committed
tables (tests/test_docs.py runs its check).
"""
import argparse
import re
from pathlib import Path

import pandas as pd

from hiso.io import atomic_write
from hiso.plan import method_kept
from hiso.results import _sig, compact_markdown, fill_blocks

PLACEHOLDER = re.compile(r"\{\{([^|}]+)\|([^|}]+)\|([^}]+)\}\}")


def fill(text: str, tables: dict[str, pd.DataFrame], methods: list[str] | None = None,
         experiments: tuple[str, ...] = ()) -> str:
    """The readings with every placeholder replaced by its cell.  `methods`: the patterns of a tier run sliced to
    some methods (--config 'methods=[...]'); a paragraph or bullet citing a method the slice left out of one of the
    `experiments` is dropped whole, so no sentence loses a number.  Any other cell the tables lack is an error."""
    def value(m):
        exp, method, col = (g.strip() for g in m.groups())
        base = re.split(r"[@+*]", method)[0]
        if exp in experiments and not method_kept({"methods": methods}, base):  # the tier's own slice rule
            return None
        if exp not in tables:
            raise KeyError(f"readings cite experiment {exp!r}, which has no table")
        t = tables[exp]
        if method.endswith("*"):  # "hiso*": the family's row at the step size its tuning run chose
            if "best lr" in t.columns:  # lr_grid: every point is a row, the chosen one marked
                t = t[(t["family"] == method[:-1]) & t["best lr"].astype(bool)].assign(method=method)
            elif method[:-1] in set(t["method"]):  # tune / scan: the method's one row is at its chosen step size
                t = t.assign(method=t["method"].where(t["method"] != method[:-1], method))
            else:
                raise KeyError(f"readings cite {exp} / {method}: the experiment has no such tuned method")
        if col == "lr" and "lr" not in t.columns and "chosen lr" in t.columns:  # a tuning job's choice
            col = "chosen lr"
        t = t.set_index("method")
        if method not in t.index or col not in t.columns:
            raise KeyError(f"readings cite {exp} / {method} / {col!r}: no such cell")
        v = t.loc[method, col]
        if isinstance(v, float) and v == float("inf"):
            return "not reached"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else _sig(float(v))  # counts stay counts
    return fill_blocks(text, PLACEHOLDER, value)


def compute_line(tables: dict[str, pd.DataFrame]) -> str:
    """The compute the page's runs spent: run hours (reported runs and rounding twins) and step-size tuning hours
    (the full-grid protocol's runs), summed over every table, from the runs' own per-round times: process CPU time
    where the runs measured it (cpu_seconds), else wall time.  Rounds that predate the CPU column are counted
    apart, at their wall time, and never as CPU-hours (results.cpu_split)."""
    def total(col):
        return sum(float(t[col].fillna(0).sum()) for t in tables.values() if col in t.columns)
    cpu = any(c in t.columns for t in tables.values() for c in ("run CPU hours", "tuning CPU hours"))
    runs, tuning = (total("run CPU hours"), total("tuning CPU hours")) if cpu else (total("run hours"),
                                                                                   total("tuning hours"))
    without = total("run hours without CPU time") + total("tuning hours without CPU time")
    if not (runs or without):
        return ""
    line = (f"Compute: {runs + tuning:,.1f} CPU-hours in all: the tables' runs {runs:,.1f} (reported seeds, rounding "
            "twins and any lr grid's tuning runs)")
    if tuning:
        line += f", step-size scans {tuning:,.1f}"
    if not cpu:
        return line + " (each run on one thread; the sum of its rounds' wall seconds, evaluations included)."
    line += " (each run on one thread; the process CPU time of its rounds, evaluations included)."
    if without:
        line += (f" Rounds run before the runs recorded CPU time are not in it: they took another {without:,.1f} hours"
                 " of wall time, which other jobs on a shared machine inflate.")
    wall = total("run hours") + total("tuning hours")
    return line + f" {wall:,.1f} hours of wall time in all."


def sections(text: str) -> dict[str, str]:
    """'## <key>' sections of the readings file -> their text."""
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            key = line[3:].strip()
            out[key] = ""
        elif key is not None:
            out[key] += line + "\n"
    return {k: v.strip() for k, v in out.items()}


def render(a) -> str:
    tables, metrics = {}, {}
    for exp in a.experiments:
        path = Path(a.tables) / f"{exp}.csv"
        if path.exists():
            tables[exp] = pd.read_csv(path)
            metrics[exp] = next(c for c in tables[exp].columns if c.startswith("final ") and c.endswith(" mean"))[6:-5]
    for path in sorted(Path(a.tables).glob("*.csv")):  # other tables the readings may cite (paper-claims.csv)
        tables.setdefault(path.stem, pd.read_csv(path))
    readings = sections(Path(a.readings).read_text()) if a.readings else {}
    fig_rel = a.figures_rel.rstrip("/")
    out = [f"# {a.title}\n",
           f"Written by the workflow (`{a.command}`) at commit {a.commit} on {a.date}; do not edit by hand. "
           "Each run's config and config hash are in its run.json; the full tables are the CSV files beside this "
           "page.\n"]
    if a.methods:  # a tier run sliced to some methods: the page says so before any reading
        names = [f"`{m}`" for m in a.methods]
        kept = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        out.append(f"This page holds the tier's methods matching {kept} (the command's `methods` slice); the tier's "
                   "other methods are not on it.\n")
    if "summary" in readings:
        out.append(fill(readings["summary"], tables, a.methods, tuple(a.experiments)) + "\n")
    compute = compute_line({e: t for e, t in tables.items() if e in a.experiments})
    if compute:
        out.append(compute + "\n")
    for name in a.sweeps or []:
        out.append(f"## Sweep: {name}\n")
        out.append(f"![{name}]({fig_rel}/sweep_{name}.png)\n")
        if f"sweep {name}" in readings:
            out.append(fill(readings[f"sweep {name}"], tables, a.methods, tuple(a.experiments)) + "\n")
    for exp in a.experiments:
        out.append(f"## {exp}\n")
        if exp not in tables:
            out.append("Not run.\n")
            continue
        out.append(f"![convergence]({fig_rel}/convergence_{exp}.png)\n")
        if exp in (a.sensitivity or []):
            out.append(f"![step-size sensitivity]({fig_rel}/sensitivity_{exp}.png)\n")
        out.append(compact_markdown(tables[exp], metrics[exp]) + "\n")
        if exp in readings:
            out.append(fill(readings[exp], tables, a.methods, tuple(a.experiments)) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--title", required=True)
    ap.add_argument("--tables", required=True, help="folder of <experiment>.csv")
    ap.add_argument("--figures-rel", default="figures", help="figure folder, relative to the page")
    ap.add_argument("--experiments", nargs="+", required=True)
    ap.add_argument("--sweeps", nargs="*", default=[])
    ap.add_argument("--sensitivity", nargs="*", default=[], help="experiments with a step-size sensitivity figure")
    ap.add_argument("--readings", default=None)
    ap.add_argument("--methods", nargs="*", default=[], help="the tier's `methods` slice (shell patterns): readings "
                    "citing another method of an experiment are dropped")
    ap.add_argument("--command", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--md", required=True)
    args = ap.parse_args()
    atomic_write(Path(args.md), render(args))
    print(f"wrote {args.md}")
