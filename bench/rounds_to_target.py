"""Rounds (and bytes) to a fixed target: DeComFL vs HiSo (vs HiSo with the oracle H on the quadratic).

Each method gets its best step size from a small log grid, chosen by median rounds-to-target over the *same*
seeds it is reported on (ties broken by the final metric): an optimistic protocol, labelled so in the output,
for a quick look only. The suite's own protocol tunes on a held-out instance or dev split (hiso/tuning.py; the
workflow's lr_grid and the curvature study). No method is compared at another's tuned step size, and the
full grid is printed too, because learning-rate robustness is part of the comparison.

    python -m bench.rounds_to_target               # both problems, 3 seeds (a few minutes on 2 cores)
    python -m bench.rounds_to_target --quick       # 1 seed, shorter grids
"""
from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np
import pandas as pd
import torch

from hiso.config import load_config
from hiso.results import reached
from hiso.run import RunFailed, run

PROBLEMS = {
    "quadratic (d=1000, kappa=10)": dict(
        task={"name": "quadratic", "dim": 1000, "spectrum": "power", "effective_rank": 10.0},
        federation={"rounds": 3000}, metric="rel_suboptimality", target=0.1, eval_every=10,
        methods={"decomfl": {"method": "decomfl"}, "hiso": {"method": "hiso"},
                 "hiso-oracle": {"method": "hiso", "curvature": {"kind": "oracle"}}},
        grid=[10 ** e for e in np.arange(-4.0, 0.01, 0.5)]),
    "digits CNN (Dirichlet 1.0)": dict(
        task={"name": "digits", "alpha": 1.0},
        federation={"rounds": 2000}, metric="accuracy", target=0.5, eval_every=25,
        methods={"decomfl": {"method": "decomfl"}, "hiso": {"method": "hiso"}},
        grid=[3e-3, 1e-2, 3e-2, 1e-1]),
}


def measure(spec: dict, overrides: dict, lr: float, seed: int) -> dict:
    """One run through the suite's runner, stopped at the target (run.stop_target): rounds and wire bytes to the
    first evaluation that reaches it (inf when it never does or the run diverges)."""
    fed_cfg = {**spec["federation"], "lr": lr}
    cfg = load_config(data={**overrides, "seed": seed, "task": spec["task"], "federation": fed_cfg,
                            "run": {"progress": False, "eval_every": spec["eval_every"], "checkpoint_every": 0,
                                    "stop_target": spec["target"]}})
    t0 = time.perf_counter()
    try:
        m = run(cfg).metrics
    except RunFailed:
        return {"rounds": math.inf, "bytes": math.inf, "final": float("nan"), "seconds": time.perf_counter() - t0}
    ev = m.dropna(subset=[spec["metric"]])
    final = float(ev[spec["metric"]].iloc[-1])
    hit = ev[reached(ev[spec["metric"]], spec["metric"], spec["target"])]
    if hit.empty:
        return {"rounds": math.inf, "bytes": math.inf, "final": final, "seconds": time.perf_counter() - t0}
    r = int(hit["round"].iloc[0])
    upto = m[m["round"] <= r]
    return {"rounds": r, "bytes": int((upto["bytes_up"] + upto["bytes_down"]).sum()), "final": final,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, fewer grid points")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the full grid as CSV")
    ap.add_argument("--only", default=None, help="run only the problems whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one process per core: timings of parallel runs stay comparable
    logging.disable(logging.WARNING)  # rejected uploads of diverging step sizes are expected in a sweep
    seeds = range(1 if args.quick else args.seeds)
    rows = []
    problems = {k: v for k, v in PROBLEMS.items() if args.only is None or args.only in k}
    for pname, spec in problems.items():
        grid = spec["grid"][::2] if args.quick else spec["grid"]
        for mname, overrides in spec["methods"].items():
            for lr in grid:
                for s in seeds:
                    res = measure(spec, overrides, float(lr), s)
                    rows.append({"problem": pname, "method": mname, "lr": float(lr), "seed": s, **res})
                    print(f"{pname:30s} {mname:12s} lr={lr:<8.3g} seed={s} rounds={res['rounds']} "
                          f"final={res['final']:.4g} ({res['seconds']:.1f}s)", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    grid = df.groupby(["problem", "method", "lr"]).agg(rounds=("rounds", "median"), bytes=("bytes", "median"),
                                                       final=("final", "median")).reset_index()
    print("\n## Median rounds to target over seeds, every step size (inf: not reached)\n")
    print(grid.pivot_table(index=["problem", "lr"], columns="method", values="rounds").to_string())
    best = grid.sort_values(["rounds", "final"]).groupby(["problem", "method"]).head(1)
    print("\n## Each method at its best step size (optimistic: chosen on the same seeds it reports)\n")
    out = []
    for pname, spec in problems.items():
        sub = best[best.problem == pname].set_index("method")
        ref = sub.loc["decomfl", "rounds"] if "decomfl" in sub.index else math.nan
        for m, r in sub.iterrows():
            per_seed = df[(df.problem == pname) & (df.method == m) & (df.lr == r.lr)]["rounds"].tolist()
            out.append({"problem": pname, "method": m, "target": f"{spec['metric']} {'>=' if spec['metric'] == 'accuracy' else '<='} {spec['target']}",
                        "best lr": f"{r.lr:.3g}", "rounds (median)": r.rounds, "rounds per seed": per_seed,
                        "bytes to target": r.bytes, "speed-up vs DeComFL": ref / r.rounds if math.isfinite(r.rounds) else math.nan})
    print(pd.DataFrame(out).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(out).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
