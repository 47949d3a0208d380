"""Paper Fig. 4 redone with measurements: zeta = Tr(H^{-1/2} S H^{-1/2}) against L*kappa = Tr(S) and L*d.

S is a 200 x 200 Hessian with log-normal eigenvalues (the paper's illustration), axis-aligned so that a
diagonal H can represent it.  H's scale is arbitrary (the step size absorbs it), so every H is compared at
matched smoothness: rescaled so that lambda_max(H^{-1/2} S H^{-1/2}) = L, the constraint the step size obeys
for DeComFL (H = I).  Then zeta(I) = L*kappa and zeta(S) = L*d.  Bars: L*d, L*kappa, and zeta for
H = I, H = S (exact whitening), H = diag(S) + delta*L (damped), and HiSo's H learned from a run on this
problem (`--rounds` rounds, the learned H as every party rebuilds it).  The paper's quoted values are drawn
as markers for comparison; they are not computed here.
"""
import argparse

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from figures.style import save
from hiso.config import load_config
from hiso.run import build_federation

ap = argparse.ArgumentParser()
ap.add_argument("--dim", type=int, default=200)
ap.add_argument("--sigma", type=float, default=2.0)
ap.add_argument("--rounds", type=int, default=2000)
ap.add_argument("--lipschitz", type=float, default=600.0, help="lambda_max (600: L*d = 120,000 as in the paper)")
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--csv", required=True)
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()
torch.set_num_threads(1)

cfg = load_config(data={"method": "hiso", "seed": a.seed, "run": {"progress": False},
                        "task": {"name": "quadratic", "dim": a.dim, "spectrum": "lognormal", "sigma": a.sigma,
                                 "lipschitz": a.lipschitz},
                        "federation": {"rounds": a.rounds, "lr": a.lr}})
fed, task = build_federation(cfg)
for _ in range(a.rounds):
    fed.run_round()
fed.load_server_model()
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
        (f"zeta, HiSo's learned H ({a.rounds} rounds)", matched_zeta(learned))]
df = pd.DataFrame(rows, columns=["quantity", "value"])
df["rel_subopt_of_the_run"] = task.evaluate()["rel_suboptimality"]
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
ax.set_title(f"zeta at matched smoothness, log-normal spectrum d={d}, sigma={a.sigma}")
save(fig, a.png, a.pdf)
