"""Paper Fig. 4 redone with measurements: zeta = Tr(H^{-1/2} S H^{-1/2}) against L*kappa = Tr(S) and L*d.

S is a 200 x 200 Hessian with log-normal eigenvalues (the paper's illustration), axis-aligned so that a
diagonal H can represent it.  H's scale is arbitrary (the step size absorbs it), so every H is compared at
matched smoothness: rescaled so that lambda_max(H^{-1/2} S H^{-1/2}) = L, the constraint the step size obeys
for DeComFL (H = I).  Then zeta(I) = L*kappa and zeta(S) = L*d.  Bars: L*d, L*kappa, and zeta for
H = I, H = S (exact whitening), H = diag(S) + delta*L (damped), and HiSo's H learned by a run on this
problem (`--run`: a run folder of workflows/config/base/zeta.yaml; its final checkpoint holds H as every
party rebuilds it).  The figure trains nothing.  The paper's quoted values are drawn as markers for
comparison; they are not computed here.
"""
import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from figures.style import save
from hiso.config import load_config
from hiso.run import build_federation

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True, help="the run folder (run.json, checkpoint.pt, metrics.csv)")
ap.add_argument("--csv", required=True)
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()
torch.set_num_threads(1)

run = Path(a.run)
info = json.loads((run / "run.json").read_text())
cfg = load_config(data=info["config"])
fed, task = build_federation(cfg)  # the problem (spectrum) from the config; H from the final checkpoint
fed.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["federation"])
rounds = cfg.federation.rounds
sigma = cfg.task["sigma"]
lam = task.lam  # S = diag(lam), lambda_max = L
L, d = lam.max(), lam.size


def matched_zeta(h: np.ndarray) -> float:
    w = lam / h  # eigenvalues of H^{-1/2} S H^{-1/2} (both diagonal)
    return float(w.sum() / w.max() * L)


learned = fed.server.curvature.flat().double().numpy()
rows = [("L*d", L * d), ("L*kappa = Tr(S)", lam.sum()),
        ("zeta, H = I (DeComFL)", matched_zeta(np.ones(d))),
        ("zeta, H = S (exact whitening)", matched_zeta(lam)),
        ("zeta, H = S + 0.1 L (damped)", matched_zeta(lam + 0.1 * L)),
        (f"zeta, HiSo's learned H ({rounds} rounds)", matched_zeta(learned))]
df = pd.DataFrame(rows, columns=["quantity", "value"])
df["rel_subopt_of_the_run"] = float(pd.read_csv(run / "metrics.csv")["rel_suboptimality"].dropna().iloc[-1])
df.to_csv(a.csv, index=False)
print(df.to_string(index=False))

fig, ax = plt.subplots(figsize=(6.5, 3.2))
# a dot plot: on a log axis a bar's length would depend on an arbitrary left edge
ax.scatter(df["value"], range(len(df)), color=["0.4", "0.4", "#1f77b4", "#2ca02c", "#98df8a", "#d62728"], zorder=3)
for y, v in enumerate(df["value"]):
    ax.text(v, y, f"  {v:,.0f}", va="center", fontsize=7)
ax.set_yticks(range(len(df)), df["quantity"])
paper = {"L*d": 120000, "L*kappa = Tr(S)": 3400}
for y, q in enumerate(df["quantity"]):
    if q in paper:
        ax.plot(paper[q], y, "k|", ms=12)
ax.set_xscale("log")
ax.invert_yaxis()
ax.set_xlabel("value (log scale; | = the paper's quoted value)")
ax.set_xlim(df["value"].min() / 3, df["value"].max() * 6)
ax.set_title(f"zeta at matched smoothness, log-normal spectrum d={d}, sigma={sigma}")
save(fig, a.png, a.pdf)
