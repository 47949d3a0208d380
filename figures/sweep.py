"""An ablation sweep: experiments that differ in one value (x), each method's rounds to target and final
metric vs x (medians / mean +- std over seeds, read from the experiments' tables)."""
import argparse
import math
import sys

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib.transforms as mtransforms
import pandas as pd

from figures.style import label, metric_label, palette, save

ap = argparse.ArgumentParser()
ap.add_argument("--tables", nargs="+", required=True, help="experiment tables (CSV), one per x")
ap.add_argument("--x", nargs="+", type=float, required=True)
ap.add_argument("--xlabel", default="x")
ap.add_argument("--xscale", default="linear")
ap.add_argument("--title", default="")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()
if len(a.tables) != len(a.x):
    sys.exit("--tables and --x must have the same length")

frames = []
for path, x in zip(a.tables, a.x):
    t = pd.read_csv(path)
    t["x"] = x
    frames.append(t)
df = pd.concat(frames, ignore_index=True).sort_values("x")
if "best lr" in df.columns:  # step-size grids: each method at its best step size of that point
    df = df[df["best lr"].astype(bool)].assign(method=lambda d: d["family"])
final_mean = next(c for c in df.columns if c.startswith("final ") and c.endswith(" mean"))
final_std = final_mean.replace(" mean", " std")
metric = final_mean.removeprefix("final ").removesuffix(" mean")

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
colors = palette(list(df["method"].unique()))
for method, g in df.groupby("method", sort=False):
    c = colors[method]
    rounds = g["rounds to target (median)"].where(g["rounds to target (median)"].apply(math.isfinite))
    axes[0].plot(g["x"], rounds, "o-", color=c, label=label(method), lw=1.4, ms=4)
    axes[1].errorbar(g["x"], g[final_mean], yerr=g[final_std].fillna(0), fmt="o-", color=c, lw=1.4, ms=4,
                     capsize=2)
# points where every seed diverged have no final metric: an x on the top edge says so
edge = mtransforms.blended_transform_factory(axes[1].transData, axes[1].transAxes)
for method, g in df.groupby("method", sort=False):
    lost = g[g[final_mean].isna() & (g.get("seeds diverged", 0) > 0)]
    if len(lost):
        axes[1].plot(lost["x"], [0.97] * len(lost), "x", color=colors[method], ms=8, mew=2, transform=edge,
                     clip_on=False, label=f"{label(method)}: every seed diverged")
    some = g[g[final_mean].notna() & (g.get("seeds diverged", 0) > 0)]
    for _, row in some.iterrows():  # the mean is over the seeds that did not diverge: say how many did
        axes[1].annotate(f"{int(row['seeds diverged'])}/{int(row['seeds'])} diverged", (row["x"], row[final_mean]),
                         textcoords="offset points", xytext=(4, 4), fontsize=7, color=colors[method])
if any(line.get_label().endswith("diverged") for line in axes[1].lines):
    axes[1].legend(fontsize=7)
finals = df[final_mean].dropna()
if len(finals) and (finals > 0).all() and finals.max() > 100 * finals.min():
    axes[1].set_yscale("log")  # values over orders of magnitude (e.g. a robust aggregator that broke)
axes[0].set_ylabel("rounds to target (median; gap = not reached)")
axes[1].set_ylabel(f"final {metric_label(metric)} (mean ± std)")
xs = sorted(df["x"].unique())
for ax in axes:
    ax.set_xlabel(a.xlabel)
    ax.set_xscale(a.xscale)
    ax.xaxis.set_major_locator(mticker.FixedLocator(xs))  # ticks at the swept values only
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.xaxis.set_major_formatter(mticker.FixedFormatter([f"{x:g}" for x in xs]))
axes[0].legend(fontsize=7)
fig.suptitle(f"{a.title}\nrounds: median over seeds; final metric: mean ± 1 std over seeds; each method at its chosen step size", fontsize=9)
fig.tight_layout()
save(fig, a.png, a.pdf)
print(df[["x", "method", "rounds to target (median)", final_mean]].to_string(index=False))
