"""One style for every figure: colours fixed per method, PDF + PNG, atomic writes."""
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"decomfl": "#1f77b4", "hiso": "#d62728", "hiso-oracle": "#2ca02c"}
plt.rcParams.update({"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def color(method: str, i: int) -> str:
    return COLORS.get(method, f"C{(i + 3) % 10}")


def save(fig, *paths: str) -> None:
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix)
        os.close(fd)
        fig.savefig(tmp, bbox_inches="tight")
        os.replace(tmp, p)
