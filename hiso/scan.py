"""A workflow step-size scan: `scan: {method: [lr, ...]}` in a tier's experiment (hiso/plan.py).

The method's step size is chosen by the suite's protocol (hiso/tuning.py) while scanning, on the tuning seed's
dev split: the grid from large to small, stopped past the best; extended past an edge where the best lies (one
grid step at a time); refined once when no point reached the target.  A point slower than twice the best so far
stops at that many rounds (runs are deterministic, so the cap cannot change the choice), and every point stops
at the target, since only its rounds to the target and its metric there rank it.

With `hold` (a tier's `scan_hold: true`), a point has reached the target only from the round after which it
stays there to the end of the budget (results.to_hold): no point stops at the target, the cap stops only a
point that is not at the target then, and a point stopped at the target by an earlier scan is continued from
its checkpoint.  On a problem where a large step size reaches the target and then leaves it (federated ZO on
a pretrained LM), this keeps the scan from choosing it.

Every tried point is a run folder <root>/<method>@<lr>/seed<seed> (metrics.csv, run.json, checkpoints), so a
killed scan resumes: finished points are read back, an interrupted one continues from its checkpoint.  The
choice file has the format of `hiso choose-lr` (choose_lr below): {"sets": {"federation.lr": lr}, "method",
"at_grid_edge", "grid": one row per tried point}; the reported runs read it with `hiso run --set-file`.

    python -m hiso scan-lr --config BASE [--set KEY=VALUE ...] --method NAME --grid LR [LR ...] --seed 100
        --metric test_loss --target 0.8 --root results/runs/<exp> --out results/tuning/<exp>/<method>.json [--hold]
"""
from __future__ import annotations

import math
from pathlib import Path

from .results import HIGHER_IS_BETTER, cpu_split, load_runs, reached, to_hold, to_target
from .tuning import MAX_EXTENSION, grid_scoring, rank, tune


def scan_run_dirs(choice: Path) -> list[Path]:
    """The run folders of the tuning runs a scan's choice lists, as the workflow lays them out: the choice
    <results>/tuning/<exp>/<method>.json, its runs <results>/runs/<exp>/<method>@<lr>/seed<k>."""
    import json
    runs = Path(choice).parents[2] / "runs" / Path(choice).parent.name
    return [runs / r["method"] / f"seed{r['seed']}" for r in json.loads(Path(choice).read_text()).get("runs", [])]


def tuning_run(base, overrides: list[str], name: str, lr: float, seed: int, root, threads: int, **run_kwargs):
    """One tried point: the run folder <root>/<name>/seed<seed> at step size lr on the dev split, run (or read
    back, or continued from its checkpoint); returns (its metrics sorted by round, whether it diverged)."""
    from .config import load_config
    from .runner import RunFailed, run
    cfg = load_config(Path(base), [*overrides, f"federation.lr={lr!r}", f"seed={seed}", f"name={name}-s{seed}",
                                   f"run.threads={threads}", "run.progress=false", "run.eval_split=dev"])
    out = Path(root) / name / f"seed{seed}"
    diverged = False
    try:
        run(cfg, out, replace_different=True, **run_kwargs)
    except RunFailed as e:
        if e.status != "diverged":
            raise
        diverged = True
    return load_runs(paths=[out / "metrics.csv"]).sort_values("round"), diverged


def scan(base: str | Path, overrides: list[str], method: str, grid: list[float], seed: int, metric: str,
         target: float, root: str | Path, threads: int = 1, max_extension: int = MAX_EXTENSION,
         hold: bool = False) -> dict:
    """Tune one method's step size; returns the choice (see the module docstring)."""
    from .config import load_config

    higher = HIGHER_IS_BETTER.get(metric, True)
    rows: dict[float, dict] = {}

    def evaluate(lr: float, cap: int | None, note: str | None) -> dict:
        name = f"{method}@{lr:g}"

        def stop(fed, task, row):  # the two stop rules: the target, and twice the best point's rounds
            at_target = reached(row[metric], metric, target)
            if at_target and not hold:
                return "target reached"
            if cap is not None and row["round"] >= cap and not (hold and at_target):
                return f"stopped at {cap} rounds (twice the best so far)"
            return None
        runs, diverged = tuning_run(base, overrides, name, lr, seed, root, threads, on_evaluate=stop,
                                    continue_stopped=hold)
        values = runs[metric].dropna()
        final = math.nan if diverged or values.empty else float(values.iloc[-1])
        rounds = math.inf if diverged else (to_hold if hold else to_target)(runs, metric, target)["rounds"]
        row = {"method": name, "lr": float(lr), "diverged": diverged, "rounds_to_target": rounds,
               f"final_{metric}": final, "rounds_run": int(runs["round"].max()), "note": note or "grid",
               "criterion": "target held to the end" if hold else "target reached"}
        rows[float(lr)] = row
        print(f"scan {name}: rounds to target {rounds}, {metric} {final:.4g}"
              + (" (diverged)" if diverged else ""), flush=True)
        return {"rounds": rounds, "final": final, "error": "diverged" if diverged else None}

    chosen = tune(evaluate, grid, higher, budget=load_config(Path(base), overrides).federation.rounds,
                  max_extension=max_extension)
    if all(r["diverged"] for r in rows.values()):
        raise ValueError(f"every step size of {method} diverged: {sorted(rows)}; widen the grid downwards")
    tried = sorted(rows)
    return {"sets": {"federation.lr": chosen}, "method": f"{method}@{chosen:g}",
            "at_grid_edge": len(tried) > 1 and chosen in (tried[0], tried[-1]),
            "grid": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in rows[lr].items()}
                     for lr in tried]}


def scan_grid(base: str | Path, overrides: list[str], method: str, grid: list[float], seeds: list[int], metric: str,
              root: str | Path, threads: int = 1, max_extension: int = MAX_EXTENSION, last_k: int | None = None,
              criterion: str = "last") -> dict:
    """The full-grid protocol (a tier's `scan_seeds: [s, ...]`): every grid point runs to the end of the budget
    on every tuning seed (dev split), and is scored by the mean over those seeds of its dev metric averaged over
    its last `last_k` evaluations (noise.LAST_K), so one lucky evaluation or one seed cannot pick it; a point
    that diverged on any seed ranks last.  While the best point is the largest or the smallest tried, the grid
    is extended past it by the grid's own spacing, one point at a time (at most `max_extension` per side), so
    the choice ends interior or is flagged `at_grid_edge`.  Every point has the same number of runs, for every
    method of a tier that uses it: equal tuning effort.  The rows of every (point, seed) are kept in "runs"
    (the step-size sensitivity figure reads them).

    With `criterion="best"` (a tier's `scan_criterion: best`) a seed scores a point by its best dev evaluation
    instead: early stopping, the round a reported run would be stopped at on dev, for methods whose metric drifts
    back after its best at a constant step size.  Both summaries of every point are kept, so the other choice
    can be recomputed from the same runs; `scored_by` names the one that chose."""
    from .noise import LAST_K, finals
    from .tuning import badness

    last_k = last_k or LAST_K
    scored_by = grid_scoring(criterion, metric, last_k)  # refuses an unknown criterion before any run
    higher = HIGHER_IS_BETTER.get(metric, True)
    runs_rows: list[dict] = []
    points: dict[float, dict] = {}

    def evaluate(lr: float, note: str) -> None:
        name = f"{method}@{lr:g}"
        scores, bests = [], []
        for seed in seeds:
            loaded, diverged = tuning_run(base, overrides, name, lr, seed, root, threads)
            f = finals(loaded, metric, higher, last_k).iloc[0]  # final and last-k: NaN when diverged
            lastk, best = f["last"], math.nan if diverged else f["best"]
            runs_rows.append({"method": name, "lr": float(lr), "seed": int(seed), "diverged": diverged,
                              f"final_{metric}": f["final"], f"last{last_k}_{metric}": lastk, f"best_{metric}": best,
                              "rounds_run": int(loaded["round"].max()), "wall_seconds": float(loaded["wall_seconds"].sum()),
                              **dict(zip(("cpu_seconds", "wall_seconds_without_cpu"), cpu_split(loaded)))})
            scores.append(badness(lastk, higher))
            bests.append(badness(best, higher))
        lost = any(math.isinf(s) for s in scores)  # diverged on a seed: last either way
        means = {k: math.nan if lost else (-sum(v) / len(v) if higher else sum(v) / len(v))
                 for k, v in ((f"mean_last{last_k}_{metric}", scores), (f"mean_best_{metric}", bests))}
        score = math.inf if lost else badness(means[scored_by["point"]], higher)
        points[float(lr)] = {"method": name, "lr": float(lr), "diverged": lost, "rounds_to_target": None,
                             **means, "score": score, "note": note,
                             "criterion": f"mean over tuning seeds {list(seeds)} of the " + (
                                 f"last {last_k} dev evaluations" if criterion == "last" else "best dev evaluation")}
        print(f"scan {name}: mean {scored_by['label']} dev {metric} {means[scored_by['point']]:.4g}"
              + (" (diverged)" if lost else ""), flush=True)

    for lr in sorted(grid, reverse=True):
        evaluate(float(lr), "grid")
    g = sorted(grid)
    steps = {True: g[-1] / g[-2], False: g[0] / g[1]} if len(g) > 1 else {}
    extended = {True: 0, False: 0}
    while steps:
        best = min(points, key=lambda lr: (points[lr]["score"], lr))
        top = best == max(points)
        if best not in (max(points), min(points)) or extended[top] >= max_extension:
            break
        extended[top] += 1
        evaluate(float(f"{best * steps[top]:.4g}"), "extended")
    if all(p["diverged"] for p in points.values()):
        raise ValueError(f"every step size of {method} diverged: {sorted(points)}; widen the grid downwards")
    chosen = min(points, key=lambda lr: (points[lr]["score"], lr))
    tried = sorted(points)
    return {"sets": {"federation.lr": chosen}, "method": f"{method}@{chosen:g}", "scored_by": scored_by,
            "at_grid_edge": len(tried) > 1 and chosen in (tried[0], tried[-1]),
            "grid": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in points[lr].items()}
                     for lr in tried],
            "runs": runs_rows}


def choose_lr(metrics: list, metric: str, target: float) -> dict:
    """The grid point to report (a tier's `tune:` grid, the `choose_lr` job), under the suite's one criterion
    (hiso/tuning.py: rank): fewest rounds to the target on its tuning run (dev split), ties broken by the final
    metric; a diverged run is never chosen.  Returns {"sets": {"federation.lr": lr}, "method": name,
    "at_grid_edge": bool, "grid": [one row per grid point]} (`python -m hiso run --set-file` reads "sets")."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    grid = []
    for path in metrics:
        run = load_runs(paths=[path]).sort_values("round")
        name = run["method"].iloc[0]
        diverged = run["status"].iloc[0] == "diverged"
        final = math.nan if diverged else float(run[metric].dropna().iloc[-1])
        grid.append({"method": name, "lr": float(name.split("@")[1]), "diverged": bool(diverged),
                     "rounds_to_target": to_target(run, metric, target)["rounds"], f"final_{metric}": final})
    ok = [g for g in grid if not g["diverged"] and not math.isnan(g[f"final_{metric}"])]
    if not ok:
        raise ValueError(f"every grid point diverged: {[g['method'] for g in grid]}; widen the grid downwards")
    best = min(ok, key=lambda g: rank(g["rounds_to_target"], g[f"final_{metric}"], False, higher))
    lrs = sorted(g["lr"] for g in grid)
    edge = best["lr"] in (lrs[0], lrs[-1]) and len(lrs) > 1
    return {"sets": {"federation.lr": best["lr"]}, "method": best["method"], "at_grid_edge": edge,
            "grid": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in g.items()} for g in grid]}
