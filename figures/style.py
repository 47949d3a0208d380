"""One style for every figure: a display name and a fixed colour per method (the same in every figure), metric
labels, PDF + PNG written atomically."""
import hashlib
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"hiso": "HiSo", "decomfl": "DeComFL", "hiso-equal-lr": "HiSo (DeComFL's step size)",
         "hiso-oracle": "HiSo, true H", "decomfl-p10": "DeComFL, P = 10", "fedzo": "FedZO", "fedkseed": "FedKSeed",
         "fedavg": "FedAvg", "fedadam": "FedAdam", "fedyogi": "FedYogi", "fedadagrad": "FedAdagrad", "mezo": "MeZO",
         "mezo_momentum": "MeZO + momentum", "zo_adam": "ZO-Adam", "hizoo": "HiZOO", "fo": "first order",
         "rmsprop_zo": "RMSProp-ZO", "rmsprop-zo": "RMSProp-ZO", "identity": "identity H (DeComFL)",
         "diagonal": "diagonal H (HiSo)", "global-scalar": "global scalar H", "layer-scalar": "per-layer scalar H",
         "block-8": "8x8 block H", "oracle": "true H", "damped-oracle": "damped true H",
         "mean": "mean", "median": "median", "trimmed-mean": "trimmed mean", "clipped-mean": "clipped mean"}
COLORS = {"decomfl": "#1f77b4", "identity": "#1f77b4", "hiso": "#d62728", "diagonal": "#d62728",
          "hiso-equal-lr": "#ff9896", "hiso-oracle": "#2ca02c", "oracle": "#2ca02c", "damped-oracle": "#98df8a",
          "decomfl-p10": "#aec7e8", "fedzo": "#9467bd", "fedkseed": "#8c564b", "fedavg": "#7f7f7f",
          "fedadam": "#bcbd22", "fedyogi": "#17becf", "fedadagrad": "#e377c2", "mezo": "#ff7f0e",
          "mezo_momentum": "#ffbb78", "zo_adam": "#c5b0d5", "hizoo": "#c49c94", "fo": "#000000",
          "rmsprop_zo": "#9edae5", "rmsprop-zo": "#9edae5", "global-scalar": "#dbdb8d", "layer-scalar": "#f7b6d2",
          "block-8": "#c7c7c7", "mean": "#7f7f7f", "median": "#9467bd", "trimmed-mean": "#8c564b",
          "clipped-mean": "#e377c2"}
METRICS = {"rel_suboptimality": "relative suboptimality", "accuracy": "accuracy",
           "f1": "F1", "test_loss": "test loss", "exact_match": "exact match"}
SPREAD = "lines: mean over seeds; band: ± 1 std"
plt.rcParams.update({"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def family(method: str) -> str:
    return method.split("@")[0]


def label(method: str) -> str:
    """Display name: 'hiso@0.03' -> 'HiSo (lr 0.03)'."""
    fam, _, lr = method.partition("@")
    name = NAMES.get(fam, fam)
    return f"{name} (lr {lr})" if lr else name


def color(method: str, i: int = 0) -> str:
    """The method family's fixed colour; an unknown family gets a colour derived from its name (the same in every
    figure), never from its position."""
    fam = family(method)
    if fam in COLORS:
        return COLORS[fam]
    k = int(hashlib.sha1(fam.encode()).hexdigest(), 16) % 20
    return plt.get_cmap("tab20")(k)


def metric_label(metric: str) -> str:
    return METRICS.get(metric, metric.replace("_", " "))


def save(fig, *paths: str) -> None:
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix)
        os.close(fd)
        fig.savefig(tmp, bbox_inches="tight")
        os.replace(tmp, p)
