"""Learned vs true curvature over rounds: Spearman correlation between each estimator's learned
diagonal and the true Hessian diagonal, every 10 evaluations of the curvature study's tuned evaluation runs
(a thin line per seed, until the run reached its target, and the median over the seeds at the rounds where at
least half of them still run), one panel per quadratic.  The study's report rule
(workflows/rules/study.smk) draws it:

    python -m figures.curvature_agreement --eval <results>/pages/curvature/eval.csv --methods LABEL ... --png ... --pdf ...

The methods are the tier's `study.learned` (estimators that learn a shape; identity and the global scalar have
none), by the labels the CSV carries.
"""
import argparse
import json

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd

from figures.style import mark, save

ap = argparse.ArgumentParser()
ap.add_argument("--eval", required=True, help="the curvature study's eval.csv")
ap.add_argument("--methods", nargs="*", default=[], help="labels of the estimators to draw (study.learned)")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()

ev = pd.read_csv(a.eval)
ev = ev[(ev.protocol == "tuned") & ev.method.isin(a.methods)]
rows = [{"problem": r.problem.strip(), "method": r.method, "seed": r.seed, **t}
        for r in ev.itertuples() for t in json.loads(r.trace or "[]")]
tr = pd.DataFrame(rows)
if tr.empty:
    raise SystemExit(f"{a.eval} holds no agreement traces of {a.methods} (tuned quadratic runs record one every "
                     "10 evaluations)")
problems = list(dict.fromkeys(tr.problem))
fig, axes = plt.subplots(1, len(problems), figsize=(3.6 * len(problems), 3.0), squeeze=False, sharey=True)
for ax, prob in zip(axes[0], problems):
    sub = tr[tr.problem == prob]
    for k, m in enumerate(a.methods):
        runs = sub[sub.method == m]
        for _seed, g in runs.groupby("seed"):  # each seed thin, until its run reached the target
            ax.plot(g["round"], g["spearman"], color=f"C{k}", alpha=0.3, lw=0.7)
        by_round = runs.groupby("round")["spearman"]
        half = max(1, (runs.seed.nunique() + 1) // 2)
        med = by_round.median()[by_round.count() >= half]  # rounds where at least half the seeds still run
        if len(med):
            ax.plot(med.index, med.values, color=f"C{k}", lw=1.8, marker=".", label=m)
    ax.axhline(0.0, color="k", lw=0.6)
    mark(ax, "spearman")
    if sub["round"].nunique() == 1:  # every run reached its target before its second trace point
        ax.text(0.5, 0.06, f"runs reached the target by round {int(sub['round'].max())}:\none trace point each",
                transform=ax.transAxes, ha="center", fontsize=7)
        ax.set_xlim(0, 2 * max(1, int(sub["round"].max())))
    seeds = sorted({g.seed.nunique() for _m, g in sub.groupby("method")})  # the seeds each method drew here
    ax.set_title(f"{prob} (n={seeds[0]}{'' if len(seeds) == 1 else f'-{seeds[-1]}'} seeds)", fontsize=9)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(4))
axes[0][0].set_ylabel("Spearman(learned H, true diag)")
axes[0][0].set_ylim(-0.3, 1.0)
handles = {}  # one legend for every method drawn in any panel
for ax in axes[0]:
    for h, lab in zip(*ax.get_legend_handles_labels()):
        handles.setdefault(lab, h)
axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7)
fig.suptitle("learned curvature vs the true Hessian diagonal (tuned runs: thin, each seed; bold, their median)",
             fontsize=9)
fig.tight_layout(rect=(0, 0, 1, 0.92))  # the suptitle above the panel titles
save(fig, a.png, a.pdf)
