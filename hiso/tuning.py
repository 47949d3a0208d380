"""The suite's step-size protocol: one criterion, and an adaptive scan for studies whose grids must find the
optimum rather than assume it.

Criterion (every tuner in the suite): fewest rounds to the target on the tuning run (a held-out problem
instance or a dev split, never the reported seeds), ties broken by the final metric; a diverged run ranks
last, whatever its last finite value.  (A scan with `hold` counts a point as at the target only from the
round after which it stays there to the end of the budget: hiso/scan.py.)  The workflow's fixed grids apply it
and flag a choice at the grid's edge (`tune:` grids: hiso/scan.py choose_lr; `lr_grid`: the tables' `best lr`,
hiso/results.py); `tune` below applies it while scanning:

1. the grid from large to small (diverging step sizes fail fast); the scan stops once a point needs more than
   twice the best rounds so far, or, while no point has reached the target, once the last two points ended
   worse than an earlier one;
2. a best point at either end of the grid is no optimum: the grid is extended past it by its own spacing, one
   step at a time (at most `max_extension` steps), until an inner point is best;
3. if no point reached the target, the grid is refined once at the geometric midpoints between the point with
   the best final metric and its neighbours.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable

MAX_EXTENSION = 4


def badness(final: float, higher_is_better: bool) -> float:
    """A final metric as "lower is better" (inf when missing)."""
    if not math.isfinite(final):
        return math.inf
    return -final if higher_is_better else final


GRID_CRITERIA = ("last", "best")  # a full-grid point's score per tuning seed: its last evaluations, or its best


def grid_scoring(criterion: str, metric: str, last_k: int) -> dict:
    """What scores a full-grid scan's points (hiso/scan.py: scan_grid), as its choice records it in `scored_by`:
    the per-seed column of its `runs`, the per-point mean of its `grid`, and the words a figure or page uses."""
    if criterion not in GRID_CRITERIA:
        raise ValueError(f"scan criterion {criterion!r}: one of {', '.join(GRID_CRITERIA)}")
    run = f"last{last_k}_{metric}" if criterion == "last" else f"best_{metric}"
    return {"criterion": criterion, "run": run, "point": f"mean_{run}",
            "label": f"mean of the last {last_k} evaluations" if criterion == "last" else "best evaluation"}


def scored_by(choice: dict) -> dict:
    """A full-grid choice's `scored_by`; a choice written before it was recorded was scored by its last
    evaluations (its points' `mean_last<k>_<metric>`)."""
    if choice.get("scored_by"):
        return choice["scored_by"]
    point = next(k for k in choice["grid"][0] if k.startswith("mean_last"))
    k, metric = point.removeprefix("mean_last").split("_", 1)
    return grid_scoring("last", metric, int(k))


def rank(rounds: float, final: float, diverged: bool, higher_is_better: bool) -> tuple[float, float]:
    """Sort key of a grid point under the criterion (smaller is better)."""
    return (rounds, math.inf if diverged else badness(final, higher_is_better))


def tune(evaluate: Callable[[float, int | None, str | None], dict], grid, higher_is_better: bool, budget: int,
         max_extension: int = MAX_EXTENSION) -> float:
    """The chosen step size.  `evaluate(lr, cap, note)` runs (or looks up) the tuning run at `lr`, stopped
    after `cap` rounds when given (a point slower than twice the best so far ends the scan whatever its exact
    count; runs are deterministic, so capping cannot change the choice), and returns {"rounds": int or inf,
    "final": float, "error": str}; `note` is "extended" / "refined" for points added past or inside the grid."""
    tried: list[tuple[float, float, float]] = []  # (rounds, badness, lr)

    def scan(lrs, note: str | None = None) -> None:
        start = len(tried)
        for lr in lrs:
            best = min(tried)[0] if tried else math.inf
            if best < math.inf and len(tried) > start and tried[-1][0] > 2 * best:
                break  # past the optimum: smaller step sizes only get slower
            here = [t[1] for t in tried[start:]]
            if best == math.inf and len(here) >= 3 and min(here[:-2]) < min(here[-2:]):
                break  # nothing reached yet and the last two points ended worse than an earlier one
            cap = None if math.isinf(best) or 2 * best >= budget else int(2 * best)
            r = evaluate(float(lr), cap, note)
            diverged = str(r.get("error") or "").startswith("diverged")
            tried.append((*rank(r["rounds"], r["final"], diverged, higher_is_better), float(lr)))

    scan(sorted(grid, reverse=True))
    g = sorted(grid)
    for top, step in ((True, g[-1] / g[-2]), (False, g[0] / g[1])) if len(g) > 1 else ():
        for _ in range(max_extension):
            edge = (max if top else min)(t[2] for t in tried)
            if min(tried)[2] != edge:
                break
            scan([edge * step], note="extended")
    if math.isinf(min(tried)[0]) and len(tried) > 1:
        lrs = sorted((t[2] for t in tried), reverse=True)
        i = lrs.index(min(tried, key=lambda t: t[1])[2])
        scan([math.sqrt(lrs[j] * lrs[j + 1]) for j in (i - 1, i) if 0 <= j < len(lrs) - 1], note="refined")
    return min(tried)[2]


def write_json(path, data: dict) -> None:
    from pathlib import Path

    from .io import atomic_write
    atomic_write(Path(path), json.dumps(data, indent=1, sort_keys=True) + "\n")
