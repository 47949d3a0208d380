"""Summary table of one experiment (CSV + Markdown), from its runs' metrics only."""
import argparse
import json
import logging
from pathlib import Path

from figures.style import label as style_label
from hiso.io import atomic_write
from hiso.results import (
    HIGHER_IS_BETTER,
    attach_choices,
    compact_markdown,
    edge_choices,
    load_runs,
    provenance_line,
    summarise,
)
from hiso.scan import scan_run_dirs

ap = argparse.ArgumentParser()
ap.add_argument("--root", default=None, help="every run under this folder (<method>/seed<k>/metrics.csv)")
ap.add_argument("--metrics", nargs="+", default=None, help="exactly these runs' metrics.csv (the workflow's)")
ap.add_argument("--metric", required=True)
ap.add_argument("--target", type=float, required=True)
ap.add_argument("--reference", default="decomfl", help="the method every other is compared with (ratios, paired "
                "claims); its grid points <reference>@<lr> count as it")
ap.add_argument("--csv", required=True)
ap.add_argument("--md", required=True)
ap.add_argument("--tuning-seed", type=int, default=None,
                help="runs of this seed are the lr grid's tuning runs (dev split): they pick each method's lr "
                     "and are left out of every reported statistic")
ap.add_argument("--choices", nargs="*", default=[],
                help="tuning/<exp>/<method>.json of the methods whose step size a tuning job chose (tune / scan)")
ap.add_argument("--labels", default="{}", help="JSON: method -> {label, color} (hiso/labels.py; the tier's "
                "label: / color:); methods without one get figures/style.py's label")
a = ap.parse_args()
table = summarise(load_runs(a.root, a.metrics), a.metric, a.target, reference=a.reference, tuning_seed=a.tuning_seed)
given = json.loads(a.labels)
table.insert(1, "label", [(given.get(m) or {}).get("label") or style_label(m) for m in table["method"]])
table.insert(2, "color", [(given.get(m) or {}).get("color") or "" for m in table["method"]])
if a.choices:  # a scan's compute from its tuning runs' rows, where they are all here (CPU time apart from wall)
    rounds = {}
    for p in map(Path, a.choices):
        dirs = scan_run_dirs(p)
        if dirs and all((d / "metrics.csv").is_file() for d in dirs):
            rounds[p.stem] = load_runs(paths=[d / "metrics.csv" for d in dirs])
    table = attach_choices(table, {p.stem: json.loads(p.read_text()) for p in map(Path, a.choices)}, rounds)
for edge in edge_choices(table):  # in the job's log and marked in the table
    logging.warning("step size chosen at the edge of its grid: %s; extend lr_grid past it", edge)
atomic_write(Path(a.csv), table.to_csv(index=False))
op = ">=" if HIGHER_IS_BETTER.get(a.metric, True) else "<="
header = f"Target: {a.metric} {op} {a.target}.\n\n"
if a.tuning_seed is not None:
    header += (f"Step sizes: `best lr` is each method's fewest rounds to the target (ties: final {a.metric}) on "
               f"its tuning run (seed {a.tuning_seed}, {a.metric} on the dev split; `tuning *` columns), "
               "not on the reported seeds.\n\n")
paths = a.metrics or [str(p) for p in Path(a.root).glob("*/seed*/metrics.csv")]
atomic_write(Path(a.md), header + compact_markdown(table, a.metric) + "\n\n" + provenance_line(paths)
             + f" Every column: `{Path(a.csv).name}`.\n")
print(table.to_string(index=False))
