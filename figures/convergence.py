"""Convergence of every method of one experiment: the metric vs rounds (from round 0, the starting model) and vs
total bytes, mean ± 1 std over seeds, with the target line; for accuracy the test loss below it, for the test
loss the accuracy."""
import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd

from figures.style import SPREAD, label, metric_label, palette, save
from hiso.noise import TWIN
from hiso.results import HIGHER_IS_BETTER, at_chosen_lr, load_runs

ap = argparse.ArgumentParser()
ap.add_argument("--root", default=None, help="every run under this folder (<method>/seed<k>/metrics.csv)")
ap.add_argument("--metrics", nargs="+", default=None, help="exactly these runs' metrics.csv (the workflow's)")
ap.add_argument("--metric", required=True)
ap.add_argument("--target", type=float, default=None, help="draw the experiment's target as a line")
ap.add_argument("--title", default="")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
ap.add_argument("--tuning-seed", type=int, default=None, help="leave out the step-size tuning runs (dev split)")
ap.add_argument("--table", default=None, help="the experiment's table: with step-size grids, draw each method at "
                "the step size its tuning run chose (the table has every grid point)")
a = ap.parse_args()

paths = a.metrics or [str(p) for p in Path(a.root).glob("*/seed*/metrics.csv")]
runs = load_runs(a.root, a.metrics)
# round 0: the starting model, evaluated before training (run.json's initial_eval)
start = []
for path in paths:
    info = Path(path).parent / "run.json"
    meta = json.loads(info.read_text()) if info.exists() else {}
    if meta.get("initial_eval"):
        start.append({"round": 0, "method": Path(path).parent.parent.name,
                      "seed": int(Path(path).parent.name.removeprefix("seed")), "cum_bytes_total": 0,
                      **meta["initial_eval"]})
if start:
    runs = pd.concat([pd.DataFrame(start), runs], ignore_index=True)
runs = runs[~runs["method"].str.endswith(TWIN)]  # rounding twins (hiso/noise.py) enter the tables only
if a.tuning_seed is not None:  # the step-size tuning runs (dev split) are no reported curve
    runs = runs[runs.seed != a.tuning_seed]
if a.table:  # grid points a tuning run did not choose are in the table, not drawn
    runs = runs[runs["method"].isin(at_chosen_lr(pd.read_csv(a.table))["method"])]
# the metric, and for the text tasks the other of accuracy / test loss: each against rounds and against bytes
other = {"accuracy": "test_loss", "test_loss": "accuracy"}.get(a.metric)
panels = [a.metric] + ([other] if other in runs and runs[other].notna().any() else [])
fig, grid = plt.subplots(len(panels), 2, figsize=(8, 3.2 * len(panels)), squeeze=False)
styles, seen = {}, {}
for method in runs["method"].unique():  # step sizes of one family: one colour, one line style each
    fam = method.split("@")[0]
    styles[method] = ["-", "--", ":", "-."][seen.get(fam, 0) % 4]
    seen[fam] = seen.get(fam, 0) + 1
colors = palette(list(runs["method"].unique()))  # distinct within the figure, fixed ones for known methods
for method, grp in runs.groupby("method", sort=False):
    n = grp["seed"].nunique()
    for k, m in enumerate(panels):
        g = grp.dropna(subset=[m])
        st = g.groupby("round").agg(m=(m, "mean"), s=(m, "std"), b=("cum_bytes_total", "mean"))
        s = st["s"].fillna(0)
        bytes_ = st[(st.index > 0) & (st["b"] > 0)]  # bytes axis: log, no round 0 (and none for MeZO: no wire)
        for ax, t in ((grid[k, 0], st), (grid[k, 1], bytes_)):
            x = t.index if ax is grid[k, 0] else t["b"]
            sd = s.loc[t.index]
            ax.plot(x, t["m"], color=colors[method], ls=styles[method], label=f"{label(method)} (n={n})", lw=1.4)
            ax.fill_between(x, t["m"] - sd, t["m"] + sd, color=colors[method], alpha=0.15, lw=0)
for k, m in enumerate(panels):
    rounds_ax, bytes_ax = grid[k]
    rounds_ax.set_xlabel("round")
    for ax in (rounds_ax, bytes_ax):
        ax.set_ylabel(metric_label(m))
        if not HIGHER_IS_BETTER.get(m, True) and m != "test_loss":
            ax.set_yscale("log")
    bytes_ax.set_xlabel("total bytes (up + down, measured)")
    bytes_ax.set_xscale("log")
    lo, hi = bytes_ax.get_xlim()
    if hi / max(lo, 1e-300) > 10:  # over a decade: decade labels only (minor ones collide)
        bytes_ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    else:  # within one decade a log axis has no labels worth reading: linear
        bytes_ax.set_xscale("linear")
        bytes_ax.xaxis.set_major_locator(mticker.MaxNLocator(4))
if a.target is not None:
    for ax in grid[0]:
        ax.axhline(a.target, color="k", ls="--", lw=0.8, label=f"target {a.target:g}")
axes = grid[0]
handles, labels = axes[0].get_legend_handles_labels()  # beside the panels: curves stay visible
axes[-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
if "mezo" in set(runs["method"].str.split("@").str[0]):
    fig.text(0.5, 0.005, "MeZO (one party) sends nothing: it has no curve against bytes.", ha="center", fontsize=7)
fig.suptitle((a.title or (Path(a.root).name if a.root else "")) + f"\n{SPREAD}", fontsize=9)
save(fig, a.png, a.pdf)
print(f"wrote {a.png} and {a.pdf}")
