"""One style for every figure: a display name and a fixed colour per method (the same in every figure), metric
labels, PDF + PNG written atomically.

Methods take their label and colour from the registry (`register_method(..., label=, color=)`); the names below
are the variants and controls that are not methods of their own (a tuned variant, a curvature kind, an
aggregator).  A name that has neither gets a colour from `free_colors()`, those far from every registered method's
and named variant's colour, so it never takes a built-in method's colour; `palette(names)` gives the names of one figure distinct
colours.

Every figure also writes `<name>.data.json` beside its PNG (`save`): for each panel its metric, the metric's
range, every drawn line (label, colour, x, y), every band (x, low, high), the legend's entries and any tick labels
drawn over each other.  The tests read the committed ones: no band outside its metric's range, no legend entry
without a drawn curve, no two lines of one panel in the same colour, no overlapping tick labels.
"""
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from hiso.labels import NAMES  # noqa: E402  (the variants' display names, shared with the tables)

COLORS = {"identity": "#1f77b4", "diagonal": "#d62728", "hiso-equal-lr": "#e377c2", "hiso-oracle": "#2ca02c",
          "oracle": "#2ca02c", "damped-oracle": "#17becf", "decomfl-p10": "#6a3d9a", "rmsprop-zo": "#ff7f0e",
          "global-scalar": "#8c564b", "layer-scalar": "#bcbd22", "block-8": "#7f7f7f", "mean": "#7f7f7f",
          "median": "#9467bd", "trimmed-mean": "#8c564b", "clipped-mean": "#e377c2"}
# candidates for names without a colour: qualitative colormaps, minus every colour already taken (below)
_CANDIDATES = [mcolors.to_hex(c) for c in ("navy", "teal", "olive", "maroon", "magenta", "darkgreen", "indigo",
                                            "orangered", "darkslategray", "goldenrod", "darkturquoise", "sienna",
                                            "royalblue", "limegreen", "deeppink", "darkorange", "slateblue")]
_CANDIDATES += [mcolors.to_hex(c) for cmap in ("Dark2", "Set1", "tab20b") for c in plt.get_cmap(cmap).colors]
METRICS = {"rel_suboptimality": "relative suboptimality", "accuracy": "accuracy",
           "f1": "F1", "test_loss": "test loss", "exact_match": "exact match"}
SPREAD = ("lines: mean over the seeds drawn (n); band: 95 % t-interval of the mean (n >= 3), clipped to the "
          "metric's range; n = 2: each seed drawn thin")
# the range a metric can take: bands are clipped to it, and the tests check every committed figure against it
BOUNDS = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "exact_match": (0.0, 1.0), "test_loss": (0.0, math.inf),
          "train_loss": (0.0, math.inf), "rel_suboptimality": (0.0, math.inf), "rounds": (0.0, math.inf),
          "spearman": (-1.0, 1.0), "count": (0.0, math.inf)}
plt.rcParams.update({"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def _methods() -> dict:
    from hiso.registry import methods
    return methods()


def family(method: str) -> str:
    return method.split("@")[0]


def table_labels(table) -> dict[str, str]:
    """method -> the label a summary table carries (its `label` column: the tier's `label:`, else derived)."""
    if table is None or "label" not in table.columns:
        return {}
    return {m: lab for m, lab in zip(table["method"], table["label"]) if isinstance(lab, str) and lab}


def table_colors(table) -> dict[str, str]:
    """method -> the colour a tier gave it (`color:`; the table's `color` column)."""
    if table is None or "color" not in table.columns:
        return {}
    return {m: c for m, c in zip(table["method"], table["color"]) if isinstance(c, str) and c}


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


def lab(c: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of a colour: distances there follow what an eye tells apart (navy and blue are close)."""
    def lin(v):
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(v) for v in mcolors.to_rgb(c))
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def distance(a: str, b: str) -> float:
    """Delta E (CIE76) between two colours: below about 25, two thin lines read as one colour."""
    return math.dist(lab(a), lab(b))


MIN_DELTA_E = 25.0


def _far(c: str, others, at_least: float = MIN_DELTA_E) -> bool:
    """Perceptual distance from every colour in `others` of at least `at_least`: told apart on a plot."""
    return all(distance(c, o) >= at_least for o in others)


def free_colors() -> list[str]:
    """Candidate colours far from every fixed colour, each also far from those kept before it."""
    out: list[str] = []
    used = taken()
    for c in _CANDIDATES:
        r, g, b = mcolors.to_rgb(c)
        if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.7:  # too light to read as a line on white
            continue
        if _far(c, used) and _far(c, out):
            out.append(c)
    return out


def palette(names, given: dict[str, str] | None = None) -> dict[str, str]:
    """Colours for the names one figure shows, each far (MIN_DELTA_E) from the others where the candidates allow:
    a tier's `color:` first (`given`), then fixed ones for known methods, then for each other name a free colour
    chosen from its name (stable across figures), moved on to the next one far from what this figure shows."""
    given = given or {}
    out, used = {}, []
    for n in names:
        c = given.get(n) or fixed_color(n)
        if c is not None and (n in given or _far(mcolors.to_hex(c), used)):
            out[n] = mcolors.to_hex(c)
            used.append(out[n])
    pool = list(dict.fromkeys([*free_colors(), *_CANDIDATES]))
    for n in names:
        if n in out:
            continue
        start = int(hashlib.sha1(family(n).encode()).hexdigest(), 16) % len(pool)
        order = [pool[(start + j) % len(pool)] for j in range(len(pool))]
        out[n] = next((c for c in order if _far(c, used)), next((c for c in order if c not in used), order[0]))
        used.append(out[n])
    return out


def color(method: str) -> str:
    """The method family's colour: its fixed one, else a free colour derived from its name (`palette` also keeps
    the names of one figure apart)."""
    return palette([method])[method]


def metric_label(metric: str) -> str:
    return METRICS.get(metric, metric.replace("_", " "))


def t_interval(mean, std, n, metric: str):
    """(low, high): the 95 % t-interval of a mean of n values with standard deviation std (Series alike), clipped
    to the metric's range (BOUNDS); NaN where n < 3 (too few values for an interval worth drawing)."""
    import numpy as np
    from scipy import stats
    half = std / np.sqrt(n) * stats.t.ppf(0.975, (n - 1).clip(lower=1))
    half[n < 3] = np.nan
    lo, hi = BOUNDS.get(metric, (-math.inf, math.inf))
    return (mean - half).clip(lower=lo, upper=hi), (mean + half).clip(lower=lo, upper=hi)


def seed_band(values, metric: str):
    """Per x (the index) over the seeds (columns; NaN: not drawn there): mean, band low, band high, n.  The band is
    the 95 % t-interval of the mean where n >= 3, clipped to the metric's range (BOUNDS); none where n < 3."""
    n = values.notna().sum(axis=1)
    mean = values.mean(axis=1)
    return (mean, *t_interval(mean, values.std(axis=1, ddof=1), n, metric), n)


def mark(ax, metric: str) -> None:
    """Say which metric a panel's y axis shows (the data file records it and its range)."""
    ax._hiso_metric = metric


def figure_data(fig) -> dict:
    """What a figure draws, panel by panel: lines, bands (fill_between) and legend entries (see the module doc)."""
    from matplotlib.collections import PolyCollection
    panels = []
    for ax in fig.axes:
        metric = getattr(ax, "_hiso_metric", None)
        lines = [{"label": ln.get_label(), "color": mcolors.to_hex(ln.get_color()),
                  "x": [float(v) for v in ln.get_xdata(orig=False)], "y": [float(v) for v in ln.get_ydata(orig=False)]}
                 for ln in ax.get_lines()]
        for cont in ax.containers:  # errorbar and bar/hist containers carry the legend's label
            lab_ = cont.get_label() or ""
            if lab_.startswith("_"):
                continue
            if hasattr(cont, "lines") and cont.lines and cont.lines[0] is not None:  # ErrorbarContainer
                ln = cont.lines[0]
                lines.append({"label": lab_, "color": mcolors.to_hex(ln.get_color()),
                              "x": [float(v) for v in ln.get_xdata()], "y": [float(v) for v in ln.get_ydata()]})
            elif hasattr(cont, "patches") and cont.patches:  # BarContainer (hist, bar)
                lines.append({"label": lab_, "color": mcolors.to_hex(cont.patches[0].get_facecolor()),
                              "x": [float(pt.get_x()) for pt in cont.patches],
                              "y": [float(pt.get_height()) for pt in cont.patches]})
        bands = []
        for coll in ax.collections:
            if isinstance(coll, PolyCollection):
                for path in coll.get_paths():
                    ys = [float(v) for v in path.vertices[:, 1]]
                    bands.append({"label": coll.get_label(), "low": min(ys), "high": max(ys)})
        legend = ax.get_legend()
        entries = [t.get_text() for t in legend.get_texts()] if legend else []
        panels.append({"title": ax.get_title(), "ylabel": ax.get_ylabel(), "metric": metric,
                       "range": list(BOUNDS.get(metric, (None, None))) if metric else None,
                       "lines": lines, "bands": bands, "legend": entries, "tick_overlaps": tick_overlaps(ax),
                       "tick_labels": tick_labels(ax)})
    return {"panels": panels}


def _shown_labels(axis) -> list:
    """The tick label texts an axis draws: major and minor (a log axis labels some minor ticks), inside its limits."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [t.label1 for t in ticks if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


def tick_labels(ax) -> dict[str, list[str]]:
    """The tick labels each labelled axis of the panel draws ({"x": ["1 kB", "10 kB"], ...}; an axis without an
    axis label, whose ticks another panel labels, is left out)."""
    return {name: [t.get_text() for t in _shown_labels(axis)]
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)) if axis.get_label().get_text()}


def tick_overlaps(ax) -> list[str]:
    """The pairs of neighbouring tick labels of the panel's axes whose drawn text overlaps ("x: 0.9 | 0.95")."""
    renderer = ax.figure.canvas.get_renderer()
    out = []
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _shown_labels(axis)]
        key = (lambda b: b[1].x0) if name == "x" else (lambda b: b[1].y0)
        boxes.sort(key=key)
        out += [f"{name}: {a} | {b}" for (a, ba), (b, bb) in zip(boxes, boxes[1:]) if ba.overlaps(bb)]
    return out


def unclutter_ticks(ax) -> None:
    """Turn the panel's x tick labels upright where their text would overlap (close swept values)."""
    ax.figure.canvas.draw()
    if any(o.startswith("x:") for o in tick_overlaps(ax)):
        ax.tick_params(axis="x", labelrotation=90)


def _clean(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else ("inf" if obj == math.inf else "-inf" if obj == -math.inf else obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def save(fig, *paths: str) -> None:
    """Write the figure to each path (atomically), and its data (figure_data) beside the first as .data.json."""
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix)
        os.close(fd)
        fig.savefig(tmp, bbox_inches="tight")
        os.replace(tmp, p)
    if paths:
        from hiso.io import atomic_write
        first = Path(paths[0])
        atomic_write(first.with_suffix(".data.json"), json.dumps(_clean(figure_data(fig)), indent=1) + "\n")


def _base(label_: str) -> str:
    """'HiSo (n=3 of 5), = DeComFL' / 'mean: every seed diverged' -> the method's name."""
    import re
    return re.sub(r" \(n=\d+( of \d+)?\).*$", "", label_.split(": ")[0]).strip()


def check_figure_data(data: dict) -> list[str]:
    """What a reviewer would reject in a figure's data (`figure_data`): a band outside its metric's range, a legend
    entry with no drawn curve, two methods drawn in one colour, tick labels drawn over each other, a labelled axis
    with fewer than 2 tick labels (a bytes axis whose one tick says nothing of its scale).  Returns one
    line per problem."""
    problems = []
    drawn = {}
    for k, p in enumerate(data["panels"]):
        lo, hi = p["range"] or (None, None)
        lo = -math.inf if lo in (None, "-inf") else float(lo)
        hi = math.inf if hi in (None, "inf") else float(hi)
        for b in p["bands"]:
            if b["low"] is not None and b["low"] < lo - 1e-9 or b["high"] is not None and b["high"] > hi + 1e-9:
                problems.append(f"panel {k} ({p['metric']}): band {b['low']:.4g}..{b['high']:.4g} outside "
                                f"[{lo:g}, {hi:g}]")
        for ln in p["lines"]:
            if any(y is not None and isinstance(y, (int, float)) for y in ln["y"]):
                drawn.setdefault(ln["label"], set()).add(ln["color"])
    for k, p in enumerate(data["panels"]):
        for entry in p["legend"]:
            if entry not in drawn:
                problems.append(f"panel {k}: legend entry {entry!r} has no drawn curve")
        problems += [f"panel {k}: tick labels overlap ({o})" for o in p.get("tick_overlaps", [])]
        problems += [f"panel {k}: the {name} axis labels {len(shown)} tick(s) ({', '.join(shown) or 'none'}), "
                     "too few to read a value off" for name, shown in p.get("tick_labels", {}).items() if len(shown) < 2]
    colors: dict[str, str] = {}
    for lab_, cs in drawn.items():
        if lab_.startswith("_") or lab_.startswith("target"):
            continue
        for c in cs:
            other = colors.get(c)
            if other is not None and other != _base(lab_):
                problems.append(f"{other!r} and {_base(lab_)!r} are drawn in the same colour {c}")
            colors.setdefault(c, _base(lab_))
    return problems
