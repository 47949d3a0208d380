"""Convergence of every method of one experiment: metric vs rounds and vs total bytes (mean +- std over seeds)."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import matplotlib.pyplot as plt  # noqa: E402

from figures.style import color, save  # noqa: E402
from hiso.results import HIGHER_IS_BETTER, load_runs  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--root", default=None, help="every run under this folder (<method>/seed<k>/metrics.csv)")
ap.add_argument("--metrics", nargs="+", default=None, help="exactly these runs' metrics.csv (the workflow's)")
ap.add_argument("--metric", required=True)
ap.add_argument("--title", default="")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
ap.add_argument("--tuning-seed", type=int, default=None, help="leave out the step-size tuning runs (dev split)")
a = ap.parse_args()

runs = load_runs(a.root, a.metrics).dropna(subset=[a.metric])
if a.tuning_seed is not None:
    runs = runs[runs.seed != a.tuning_seed]
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for i, (method, grp) in enumerate(runs.groupby("method", sort=False)):
    stats = grp.groupby("round").agg(m=(a.metric, "mean"), s=(a.metric, "std"), b=("cum_bytes_total", "mean"),
                                     n=("seed", "nunique"))
    s = stats["s"].fillna(0)
    label = f"{method} (n={int(stats['n'].max())})"
    for ax, x in zip(axes, (stats.index, stats["b"])):
        ax.plot(x, stats["m"], color=color(method, i), label=label, lw=1.4)
        ax.fill_between(x, stats["m"] - s, stats["m"] + s, color=color(method, i), alpha=0.15, lw=0)
axes[0].set_xlabel("round")
axes[1].set_xlabel("total bytes (up + down, measured)")
axes[1].set_xscale("log")
axes[0].set_ylabel(a.metric)
if not HIGHER_IS_BETTER.get(a.metric, True):
    axes[0].set_yscale("log")
axes[0].legend(fontsize=8)
fig.suptitle(a.title or (Path(a.root).name if a.root else ""))
save(fig, a.png, a.pdf)
print(f"wrote {a.png} and {a.pdf}")
