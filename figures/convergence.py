"""Convergence of every method of one experiment: the metric vs rounds (from round 0, the starting model) and vs
total bytes, the mean over seeds with a 95 % t-interval band clipped to the metric's range (figures/style.py:
seed_band; with 2 seeds each seed is drawn), with the target line; for accuracy the test loss below it, for the
test loss the accuracy.  Methods carry the table's labels and colours (the tier's `label:` / `color:`); a method
whose curve equals another's, or stays within 0.1 % of it everywhere, is drawn dashed and says so; one with no
finite value says so below."""
import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd

from figures.style import (
    SPREAD,
    label,
    mark,
    metric_label,
    palette,
    save,
    seed_band,
    table_colors,
    table_labels,
    tick_labels,
    tick_overlaps,
    unclutter_ticks,
)
from hiso.noise import TWIN
from hiso.results import HIGHER_IS_BETTER, at_chosen_lr, load_runs

CLOSE = 1e-3  # seed-mean curves closer than this (relative) everywhere are drawn dashed and named as close


def likeness(a: pd.Series, b: pd.Series) -> str | None:
    """"equals" where two seed-mean curves are the same numbers; "is within 3e-05 (relative) of" where they differ
    by less than CLOSE everywhere (rounding-level differences: one line to the eye); else None."""
    if a.equals(b):
        return "equals"
    if not a.index.equals(b.index):
        return None
    rel = ((a - b).abs() / b.abs().where(b != 0)).max()
    return f"is within {rel:.1g} (relative) of" if rel <= CLOSE else None


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
table = pd.read_csv(a.table) if a.table else None
if table is not None:  # grid points a tuning run did not choose are in the table, not drawn
    runs = runs[runs["method"].isin(at_chosen_lr(table)["method"])]
names = {m: table_labels(table).get(m) or label(m) for m in runs["method"].unique()}
# the metric, and for the text tasks the other of accuracy / test loss: each against rounds and against bytes
other = {"accuracy": "test_loss", "test_loss": "accuracy"}.get(a.metric)
panels = [a.metric] + ([other] if other in runs and runs[other].notna().any() else [])
fig, grid = plt.subplots(len(panels), 2, figsize=(8.4, 3.3 * len(panels)), squeeze=False)
styles, seen = {}, {}
for method in runs["method"].unique():  # step sizes of one family: one colour, one line style each
    fam = method.split("@")[0]
    styles[method] = ["-", "--", ":", "-."][seen.get(fam, 0) % 4]
    seen[fam] = seen.get(fam, 0) + 1
colors = palette(list(runs["method"].unique()), table_colors(table))  # distinct within the figure
MARKERS = "osD^vP*Xh<>"
notes, curves = [], {}

for i, (method, grp) in enumerate(runs.groupby("method", sort=False)):
    total = grp["seed"].nunique()
    for k, m in enumerate(panels):
        wide = grp.pivot_table(index="round", columns="seed", values=m, aggfunc="first")
        mean, lo, hi, n = seed_band(wide, m)
        keep = mean.notna()
        if not keep.any():
            if k == 0:
                notes.append(f"{names[method]}: no finite {metric_label(m)} (every seed diverged)")
            continue
        drawn = int(n[keep].iloc[-1])
        same, how = next(((o, h) for o, c in curves.get(m, {}).items() if (h := likeness(mean[keep], c))),
                         (None, None))
        curves.setdefault(m, {})[method] = mean[keep]
        name = f"{names[method]} (n={drawn}" + (f" of {total}" if drawn < total else "") + ")"
        ls = "--" if same else styles[method]
        if same:
            name += f", {'=' if how == 'equals' else '≈'} {names[same]}"
            if k > 0 or how != "equals":  # the legend shows the first panel's labels: say it below
                notes.append(f"{metric_label(m)}: {names[method]}'s curve {how} {names[same]}'s (drawn dashed).")
        b = grp.groupby("round")["cum_bytes_total"].mean().reindex(mean.index)
        pts = int(keep.sum())
        for ax, use_bytes in ((grid[k, 0], False), (grid[k, 1], True)):
            sel = keep & ((b > 0) & (mean.index > 0) if use_bytes else True)  # bytes: log axis, no round 0
            if not sel.any():
                continue  # MeZO: no wire, no curve against bytes
            x = b[sel] if use_bytes else mean.index[sel]
            ax.plot(x, mean[sel], color=colors[method], ls=ls, lw=1.4, label=name, marker=MARKERS[i % len(MARKERS)],
                    ms=3, markevery=max(1, pts // 10), zorder=3 + i * 0.01)
            if drawn == 2 or total == 2:  # two seeds: each drawn, no band
                for seed in wide.columns:
                    col = wide[seed][sel].dropna()
                    ax.plot(b[col.index] if use_bytes else col.index, col, color=colors[method], lw=0.6,
                            alpha=0.45, ls=ls)
            else:
                ax.fill_between(x, lo[sel], hi[sel], color=colors[method], alpha=0.13, lw=0)
for k, m in enumerate(panels):
    rounds_ax, bytes_ax = grid[k]
    rounds_ax.set_xlabel("round")
    for ax in (rounds_ax, bytes_ax):
        ax.set_ylabel(metric_label(m))
        mark(ax, m)
        if not HIGHER_IS_BETTER.get(m, True) and m != "test_loss":
            ax.set_yscale("log")
    bytes_ax.set_xlabel("total bytes (up + down, measured)")
    bytes_ax.set_xscale("log")
    lo, hi = bytes_ax.get_xlim()
    if hi / max(lo, 1e-300) > 100:  # over two decades: decade labels only (minor ones collide)
        bytes_ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    elif hi / max(lo, 1e-300) > 10:  # one or two decades: 1, 2, 5 of each decade labelled (20 kB, 1 MB)
        bytes_ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        bytes_ax.xaxis.set_major_formatter(mticker.EngFormatter(unit="B", sep=" "))
        bytes_ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    else:  # within one decade a log axis has no labels worth reading (or only 2..9 kB, crowded): linear
        bytes_ax.set_xscale("linear")
        bytes_ax.xaxis.set_major_locator(mticker.MaxNLocator(4, min_n_ticks=3))
        bytes_ax.xaxis.set_major_formatter(mticker.EngFormatter(unit="B", sep=" "))
if a.target is not None:
    for ax in grid[0]:
        ax.axhline(a.target, color="k", ls="--", lw=0.8, label=f"target {a.target:g}")
axes = grid[0]
handles, labels = axes[0].get_legend_handles_labels()  # beside the panels: curves stay visible
axes[-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
if "mezo" in set(runs["method"].str.split("@").str[0]):
    notes.append("MeZO (one party) sends nothing: it has no curve against bytes.")
fig.suptitle((a.title or (Path(a.root).name if a.root else "")) + f"\n{SPREAD}", fontsize=9)
fig.canvas.draw()
for _, bytes_ax in grid:  # labels that collide: 1 and 3 of each decade, then decades only, then upright; never
    for subs in ((1.0, 3.0), (1.0,)):  # thinned to fewer than 2 labels inside the panel
        if bytes_ax.get_xscale() != "log" or not any(o.startswith("x:") for o in tick_overlaps(bytes_ax)):
            break
        before = bytes_ax.xaxis.get_major_locator()
        bytes_ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
        fig.canvas.draw()
        if len(tick_labels(bytes_ax)["x"]) < 2:
            bytes_ax.xaxis.set_major_locator(before)
            fig.canvas.draw()
            break
    unclutter_ticks(bytes_ax)
if notes:  # below everything drawn, labels turned upright above included, so no note covers a label
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
    fig.text(0.5, bottom - 0.01, "\n".join(notes), ha="center", va="top", fontsize=7)
save(fig, a.png, a.pdf)
print(f"wrote {a.png} and {a.pdf}")
