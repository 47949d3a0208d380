"""Paper Fig. 5 (right): histogram of the learned diagonal H, read from the runs' final checkpoints
(checkpoint.pt holds the server's curvature state, which every party rebuilt from the log)."""
import argparse

import matplotlib.pyplot as plt
import numpy as np
import torch

from figures.style import mark, palette, save

ap = argparse.ArgumentParser()
ap.add_argument("--checkpoints", nargs="+", required=True, help="<run>/checkpoint.pt of learned-H runs")
ap.add_argument("--labels", nargs="+", required=True)
ap.add_argument("--title", default="")
ap.add_argument("--png", required=True)
ap.add_argument("--pdf", required=True)
a = ap.parse_args()

fig, ax = plt.subplots(figsize=(4.5, 3.2))
colors = palette(list(a.labels))
for path, label in zip(a.checkpoints, a.labels):
    sd = torch.load(path, map_location="cpu", weights_only=False)["federation"]["curvature"]
    h = torch.cat([s.reshape(-1) for s in sd["state"]]).double().numpy()
    h = h[h > 0]
    bins = np.logspace(np.log10(h.min()), np.log10(h.max()), 60)
    counts, edges = np.histogram(h, bins=bins)
    ax.plot(edges, np.r_[counts, counts[-1]], drawstyle="steps-post", lw=1.3, color=colors[label],
            label=f"{label} (d={h.size}, max/median {h.max() / np.median(h):.3g})")
    q = np.quantile(h, [0.5, 0.99])
    print(f"{label}: {sd['kind']} d={h.size} min={h.min():.3g} median={q[0]:.3g} p99={q[1]:.3g} max={h.max():.3g}")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("learned H entry")
ax.set_ylabel("count")
mark(ax, "count")
ax.legend(fontsize=7)
ax.set_title(a.title)
save(fig, a.png, a.pdf)
