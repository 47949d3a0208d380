"""Step-size sensitivity of one experiment: each method's tuning score against its step size, from the full-grid
tuning protocol's choice files (hiso/scan.py: scan_grid; `scan_seeds:` in a tier): per point the mean over the
tuning seeds of the dev metric averaged over the last evaluations (line), each tuning seed's value (dots), the
chosen step size (star) and diverged points (x at the top).

    python -m figures.sensitivity --choices tuning/<exp>/<method>.json ... --metric test_loss --png .. --pdf ..
"""
import argparse
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd

from figures.style import label, mark, metric_label, palette, save, unclutter_ticks
from hiso.tuning import scored_by

ap = argparse.ArgumentParser()
ap.add_argument("--choices", nargs="+", required=True, help="tuning/<exp>/<method>.json (scan_grid's)")
ap.add_argument("--metric", required=True)
ap.add_argument("--labels", default="{}", help="JSON: method -> {label, color} (hiso/labels.py)")
ap.add_argument("--title", default="")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()

given = json.loads(a.labels)
choices = {Path(p).stem: json.loads(Path(p).read_text()) for p in a.choices}
choices = {m: c for m, c in choices.items() if c.get("runs")}  # only the full-grid protocol records its runs
if not choices:
    raise SystemExit("no choice file holds per-seed tuning runs (the full-grid protocol: scan_seeds)")
colors = palette(list(choices), {m: (given.get(m) or {}).get("color") for m in choices if (given.get(m) or {}).get("color")})
fig, ax = plt.subplots(figsize=(6.4, 3.6) if len(choices) <= 4 else (8.4, 4.4))  # room beside a long legend
lost_y, scored = [], set()
for method, c in choices.items():
    name = (given.get(method) or {}).get("label") or label(method)
    runs = pd.DataFrame(c["runs"])
    pts = pd.DataFrame(c["grid"]).sort_values("lr")
    by = scored_by(c)  # what scored the points (scan_grid)
    col, mean_col = by["run"], by["point"]
    scored.add(by["label"])
    ok = pts[~pts["diverged"].astype(bool)]
    budget = (f", {int(runs.loc[~runs['diverged'].astype(bool), 'rounds_run'].max())} rounds"
              if "rounds_run" in runs and not runs["diverged"].astype(bool).all() else "")  # the tuning runs' length
    # the mean line stops at a diverged point (NaN breaks it) rather than joining its neighbours across it
    line = pts[mean_col].astype(float).where(~pts["diverged"].astype(bool))
    ax.plot(pts["lr"], line, "o-", color=colors[method], lw=1.4, ms=4,
            label=f"{name} ({len(runs['seed'].unique())} tuning seeds{budget})")
    fin = runs[runs[col].apply(lambda v: v is not None and math.isfinite(v))]
    ax.plot(fin["lr"], fin[col], ".", color=colors[method], alpha=0.45, ms=5)
    chosen = float(c["sets"]["federation.lr"])
    at = ok[ok["lr"] == chosen]
    ax.plot(at["lr"], at[mean_col], "*", color=colors[method], ms=13, mec="k", mew=0.6)
    lost = pts[pts["diverged"].astype(bool)]
    if len(lost):
        lost_y.append((method, lost["lr"].tolist()))
ax.set_xscale("log")
tried = sorted({float(g["lr"]) for c in choices.values() for g in c["grid"]})
if min((b / a for a, b in zip(tried, tried[1:])), default=2.0) >= 1.5:  # one grid, or grids that interleave
    ax.xaxis.set_major_locator(mticker.FixedLocator(tried))  # ticks at the step sizes tried, none between
    ax.xaxis.set_major_formatter(mticker.FixedFormatter([f"{lr:g}" for lr in tried]))
else:  # grids offset from each other (0.001 and 0.00125): 1, 2, 5 of each decade; the dots mark what was tried
    ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
ax.xaxis.set_minor_locator(mticker.NullLocator())
top = ax.get_ylim()[1]
for k, (method, lrs) in enumerate(lost_y):  # side by side where several methods diverged at one step size
    dodge = 10 ** (0.035 * (k - (len(lost_y) - 1) / 2))
    ax.plot([lr * dodge for lr in lrs], [top] * len(lrs), "x", color=colors[method], ms=8, mew=2, clip_on=False)
ax.set_ylim(top=top)
ax.set_xlabel("step size (federation.lr)")
ax.set_ylabel(f"dev {metric_label(a.metric).removeprefix('test ')}, {' / '.join(sorted(scored))}")  # dev loss
mark(ax, a.metric)
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
fig.suptitle((a.title + "\n" if a.title else "") + "step-size sensitivity on the dev split: line = mean over tuning "
             "seeds, dots = each seed, star = chosen, x = diverged", fontsize=8)
fig.tight_layout()  # it leaves room for the suptitle
unclutter_ticks(ax)
fig.tight_layout()
save(fig, a.png, a.pdf)
print(f"wrote {a.png}")
