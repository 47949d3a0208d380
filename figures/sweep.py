"""An ablation sweep: experiments that differ in one value (x); each method's rounds to target and final metric
vs x, read from the experiments' tables.

Rounds: the median over seeds, its bar the range over seeds (min to max); a point whose median seed never reached
the target is an open marker at the budget ("not reached in R rounds"), never a gap.  Final metric: mean over the
seeds that finished, with a 95 % t-interval (n >= 3) clipped to the metric's range; a point where every seed
diverged is an x at the top of the panel, at its own x.  Methods carry the tables' labels (the tier's `label:`)."""
import argparse
import math
import re
import sys

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd

from figures.style import (
    label,
    mark,
    metric_label,
    palette,
    save,
    t_interval,
    table_colors,
    table_labels,
    unclutter_ticks,
)

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
df = pd.concat(frames, ignore_index=True).sort_values("x", kind="stable")
names = table_labels(df)
if "best lr" in df.columns:  # step-size grids: each method at its best step size of that point
    df = df[df["best lr"].astype(bool)]
    # the family's label: the chosen point's without its step size (each x may choose another)
    names = {f: re.sub(r" \(lr [^)]*\)$", "", names.get(m, label(m))) for f, m in zip(df["family"], df["method"])}
    colors_given = {f: c for f, c in zip(df["family"], df.get("color", pd.Series(dtype=object))) if isinstance(c, str) and c}
    df = df.assign(method=df["family"])
else:
    colors_given = table_colors(df)
final_mean = next(c for c in df.columns if c.startswith("final ") and c.endswith(" mean"))
final_std = final_mean.replace(" mean", " std")
metric = final_mean.removeprefix("final ").removesuffix(" mean")

fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.9))
colors = palette(list(df["method"].unique()), colors_given)
# each point's budget: the rounds its runs were given (a diverged run stops early, so the largest over methods)
budget = df.groupby("x")["rounds"].max()
ring: dict[float, int] = {}  # per x, how many methods' not-reached markers are drawn there
for method, g in df.groupby("method", sort=False):
    c, name = colors[method], names.get(method) or label(method)
    med = g["rounds to target (median)"]
    reached = med.apply(math.isfinite)
    if reached.any():
        r = g[reached]
        low = r.get("rounds to target (min)", r["rounds to target (median)"])
        high = r.get("rounds to target (max)", r["rounds to target (median)"]).where(
            lambda v: v.apply(math.isfinite), r["rounds"])  # a seed not reached: its bar runs to the budget
        axes[0].errorbar(r["x"], r["rounds to target (median)"], yerr=[r["rounds to target (median)"] - low,
                         high - r["rounds to target (median)"]], fmt="o-", color=c, lw=1.4, ms=4, capsize=2,
                         label=name)
    u = g[~reached & (g["seeds diverged"] < g["seeds"])]  # every seed diverged: the x on the right says so
    if len(u):
        at = u["x"].map(budget)
        for k, (x, y) in enumerate(zip(u["x"], at)):  # methods censored at one point: concentric rings
            ring[x] = ring.get(x, -1) + 1
            axes[0].plot([x], [y], "o", mfc="none", color=c, ms=6 + 4 * ring[x], mew=1.5,
                         label=f"{name}: not reached in {int(at.max()):,} rounds" if k == 0 else "_nolegend_")
    finite = g[g[final_mean].notna()]
    if len(finite):
        n = (finite["seeds"] - finite["seeds diverged"]).clip(lower=1)
        lo, hi = t_interval(finite[final_mean], finite[final_std], n, metric)
        lo, hi = lo.fillna(finite[final_mean]), hi.fillna(finite[final_mean])  # under 3 seeds: no bar
        axes[1].errorbar(finite["x"], finite[final_mean], yerr=[finite[final_mean] - lo, hi - finite[final_mean]],
                         fmt="o-", color=c, lw=1.4, ms=4, capsize=2, label=name)
        for _, row in finite[finite["seeds diverged"] > 0].iterrows():  # the mean is over the others: say so
            axes[1].annotate(f"{int(row['seeds diverged'])}/{int(row['seeds'])} diverged", (row["x"], row[final_mean]),
                             textcoords="offset points", xytext=(4, 4), fontsize=7, color=c)
finals = df[final_mean].dropna()
if len(finals) and (finals > 0).all() and finals.max() > 100 * finals.min():
    axes[1].set_yscale("log")  # values over orders of magnitude (e.g. a robust aggregator that broke)
top = axes[1].get_ylim()[1]
for method, g in df.groupby("method", sort=False):  # every seed diverged: an x at the top, at that point's x
    lost = g[g[final_mean].isna() & (g["seeds diverged"] > 0)]
    if len(lost):
        axes[1].plot(lost["x"], [top] * len(lost), "x", color=colors[method], ms=8, mew=2, clip_on=False,
                     label=f"{names.get(method) or label(method)}: every seed diverged")
axes[1].set_ylim(top=top)
axes[0].set_ylabel("rounds to target")
axes[1].set_ylabel(f"final {metric_label(metric)}")
mark(axes[0], "rounds")
mark(axes[1], metric)
xs = sorted(df["x"].unique())
for ax in axes:
    ax.set_xlabel(a.xlabel)
    ax.set_xscale(a.xscale)
    ax.xaxis.set_major_locator(mticker.FixedLocator(xs))  # ticks at the swept values only
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.xaxis.set_major_formatter(mticker.FixedFormatter([f"{x:g}" for x in xs]))
handles, labels_ = [], []
for ax in axes:
    h, lab = ax.get_legend_handles_labels()
    for hh, ll in zip(h, lab):
        if ll not in labels_:
            handles.append(hh)
            labels_.append(ll)
axes[1].legend(handles, labels_, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
fig.suptitle(f"{a.title}\nrounds to target: median over seeds, bar min to max, open marker: not reached within "
             "the budget\nfinal metric: mean over seeds with a 95 % CI; each method at its chosen step size", fontsize=8)
fig.tight_layout()  # it leaves room for the suptitle
for ax in axes:
    unclutter_ticks(ax)  # close swept values: labels that would overlap are rotated
fig.tight_layout()  # again, with any labels turned upright
save(fig, a.png, a.pdf)
print(df[["x", "method", "rounds to target (median)", final_mean]].to_string(index=False))
