"""One style for every figure: a display name and a fixed colour per method (the same in every figure), metric
labels, PDF + PNG written atomically.

Methods take their label and colour from the registry (`register_method(..., label=, color=)`); the names below
are the variants and controls that are not methods of their own (a tuned variant, a curvature kind, an
aggregator).  A name that has neither gets a colour from `free_colors()`, those far from every registered method's
and named variant's colour, so it never takes a built-in method's colour; `palette(names)` gives the names of one figure distinct
colours.
"""
import hashlib
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"hiso-equal-lr": "HiSo (DeComFL's step size)", "hiso-oracle": "HiSo, true H",
         "decomfl-p10": "DeComFL, P = 10", "rmsprop-zo": "RMSProp-ZO", "identity": "identity H (DeComFL)",
         "diagonal": "diagonal H (HiSo)", "global-scalar": "global scalar H", "layer-scalar": "per-layer scalar H",
         "block-8": "8x8 block H", "oracle": "true H", "damped-oracle": "damped true H",
         "mean": "mean", "median": "median", "trimmed-mean": "trimmed mean", "clipped-mean": "clipped mean"}
COLORS = {"identity": "#1f77b4", "diagonal": "#d62728", "hiso-equal-lr": "#ff9896", "hiso-oracle": "#2ca02c",
          "oracle": "#2ca02c", "damped-oracle": "#98df8a", "decomfl-p10": "#aec7e8", "rmsprop-zo": "#9edae5",
          "global-scalar": "#dbdb8d", "layer-scalar": "#f7b6d2", "block-8": "#c7c7c7", "mean": "#7f7f7f",
          "median": "#9467bd", "trimmed-mean": "#8c564b", "clipped-mean": "#e377c2"}
# candidates for names without a colour: qualitative colormaps, minus every colour already taken (below)
_CANDIDATES = [mcolors.to_hex(c) for c in ("navy", "teal", "olive", "maroon", "magenta", "darkgreen", "indigo",
                                            "orangered", "darkslategray", "goldenrod", "darkturquoise", "sienna",
                                            "royalblue", "limegreen", "deeppink", "darkorange", "slateblue")]
_CANDIDATES += [mcolors.to_hex(c) for cmap in ("Dark2", "Set1", "tab20b") for c in plt.get_cmap(cmap).colors]
METRICS = {"rel_suboptimality": "relative suboptimality", "accuracy": "accuracy",
           "f1": "F1", "test_loss": "test loss", "exact_match": "exact match"}
SPREAD = "lines: mean over seeds; band: ± 1 std"
plt.rcParams.update({"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def _methods() -> dict:
    from hiso.registry import methods
    return methods()


def family(method: str) -> str:
    return method.split("@")[0]


def label(method: str) -> str:
    """Display name: 'hiso@0.03' -> 'HiSo (lr 0.03)'."""
    fam, _, lr = method.partition("@")
    spec = _methods().get(fam)
    name = NAMES.get(fam) or (spec.label if spec is not None and spec.label else fam)
    return f"{name} (lr {lr})" if lr else name


def fixed_color(name: str) -> str | None:
    """The colour a registered method or a named variant always has (None: it has none)."""
    fam = family(name)
    if fam in COLORS:
        return COLORS[fam]
    spec = _methods().get(fam)
    return spec.color if spec is not None else None


def taken() -> set[str]:
    """Every fixed colour: those of the registered methods and of the named variants."""
    return {mcolors.to_hex(c) for c in [*COLORS.values(), *(s.color for s in _methods().values() if s.color)]}


def _far(c: str, others, at_least: float = 0.25) -> bool:
    """RGB distance (0..sqrt 3) from every colour in `others` of at least `at_least`: told apart on a plot."""
    a = mcolors.to_rgb(c)
    return all(sum((x - y) ** 2 for x, y in zip(a, mcolors.to_rgb(o))) ** 0.5 >= at_least for o in others)


def free_colors() -> list[str]:
    """Candidate colours far from every fixed colour, each also far from those kept before it."""
    out: list[str] = []
    used = taken()
    for c in _CANDIDATES:
        r, g, b = mcolors.to_rgb(c)
        if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.7:  # too light to read as a line on white
            continue
        if _far(c, used, 0.3) and _far(c, out, 0.25):
            out.append(c)
    return out


def palette(names) -> dict[str, str]:
    """Colours for the names one figure shows: fixed ones first, then for each other family a free colour chosen
    from its name (stable across figures), moved on to the next free one if this figure already shows it."""
    out, used = {}, set()
    for n in names:
        c = fixed_color(n)
        if c is not None:
            out[n] = c
            used.add(mcolors.to_hex(c))
    free = free_colors()
    by_family: dict[str, str] = {}
    for n in names:
        if n in out:
            continue
        fam = family(n)
        if fam not in by_family:
            start = int(hashlib.sha1(fam.encode()).hexdigest(), 16) % len(free)
            order = [free[(start + j) % len(free)] for j in range(len(free))]
            by_family[fam] = next((c for c in order if c not in used), order[0])  # repeats only past len(free)
            used.add(by_family[fam])
        out[n] = by_family[fam]
    return out


def color(method: str) -> str:
    """The method family's colour: its fixed one, else a free colour derived from its name (`palette` also keeps
    the names of one figure apart)."""
    return palette([method])[method]


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
