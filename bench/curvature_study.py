"""What HiSo's curvature buys: every scalar-only curvature estimator, each with its own tuned step size.

Protocol, used for every problem:
  1. tuning: each method's step size is picked from a log grid on a *validation* run, never on the test
     metric: the quadratic uses a separate problem instance (seed 100: other spectrum draw, optima and
     directions), digits its dev split (held out of the training split).  Criterion: fewest rounds to the
     target, ties (e.g. never reached) broken by the final validation metric.  The grid is scanned from
     large to small and stops once a step size needs more than twice the best rounds so far, or, while no
     point has reached the target, once two successive points end worse than an earlier one (every tried
     point is in <out>_tuning.csv).  If no grid point reaches the target, the grid is refined once at the
     geometric midpoints between the best point (by final metric) and its neighbours (rows `refined`).
     Before that, a best point at either end of the grid is no optimum: the grid is extended past it one
     step at a time (the grid's own spacing, at most MAX_EXTENSION steps) until an inner point is best
     (rows `extended`).
  2. evaluation: 3 seeds at the tuned step size, on the test metric: rounds, forward passes and bytes to the
     target (so methods that spend 2P + 1 passes or 2P scalars per step are not flattered), final metric,
     and the agreement of the learned diagonal with the true Hessian diagonal (Spearman, log10 scale and
     spread; exact on quadratics, Hutchinson on digits) and zeta = sum_i A_ii / H_i.
  3. equal step size: every method at DeComFL's tuned step size (HiSo's advantage may be robustness).

    python bench/curvature_study.py --out bench/results/curvature_study      # all problems (long)
    python bench/curvature_study.py --only "d=100 " --quick                   # a smoke check
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hiso import tuning
from hiso.config import load_config
from hiso.diagnostics import agreement, true_diagonal, zeta
from hiso.io import atomic_write
from hiso.results import HIGHER_IS_BETTER, reached
from hiso.run import RunFailed, run

CENTRAL = {"federation": {"difference": "central"}}
METHODS = {
    "identity (DeComFL)": {"curvature": {"kind": "identity"}},
    "global_scalar": {"curvature": {"kind": "global_scalar"}},
    "diagonal (HiSo)": {"curvature": {"kind": "diagonal"}},
    "second_difference": {"curvature": {"kind": "second_difference"}, **CENTRAL},
    "stein": {"curvature": {"kind": "stein", "beta": 0.99, "floor": 0.1}, **CENTRAL},
    "oracle": {"curvature": {"kind": "oracle"}},
    "damped_oracle": {"curvature": {"kind": "damped_oracle", "damping": 0.1}},
    "mixed (w=0.5)": {"curvature": {"kind": "mixed", "mix": 0.5}},  # HiSo's diagonal half-way to its mean
    # Controls for the oracle's perturbation radius. Whitened directions z = H^-1/2 u make the forward
    # difference's curvature term (mu/2) z^T A z = (mu/2)|u|^2 ~ mu d / 2 under the oracle (DeComFL's:
    # (mu/2) Tr A): zero-mean noise in every derivative that grows with d. Central differences cancel it
    # exactly on a quadratic (2P passes); mu_scale rms shrinks mu by RMS(H^-1/2) (same passes).
    "oracle_central": {"curvature": {"kind": "oracle"}, **CENTRAL},
    "oracle_mu_rms": {"curvature": {"kind": "oracle"}, "federation": {"mu_scale": "rms"}},
}
ORACLES = ("oracle", "oracle_central", "oracle_mu_rms")  # the oracle's gain: the best of its variants
QUAD_GRID = [10 ** e for e in np.arange(-3.5, 0.01, 0.5)]
MAX_EXTENSION = tuning.MAX_EXTENSION  # grid steps tuning may add past an edge of the grid where the best lies


def quad(dim, **kw):
    return {"name": "quadratic", "dim": dim, **kw}


PROBLEMS = {
    "lognormal d=100 ": dict(task=quad(100, spectrum="lognormal", sigma=1.5), rounds=3000, target=0.1,
                             metric="rel_suboptimality", eval_every=10, grid=QUAD_GRID),
    "lognormal d=1000": dict(task=quad(1000, spectrum="lognormal", sigma=1.5), rounds=4000, target=0.1,
                             metric="rel_suboptimality", eval_every=10, grid=QUAD_GRID),
    # d = 10^4: a run still worse than its start (rel. suboptimality > 1) after 10 % of the budget is stopped
    # ("no progress"): at 5-8 ms a round, step sizes too large to diverge but too large to converge would
    # otherwise cost 30,000 rounds each; it cannot change a choice (those runs never reach the target).
    "lognormal d=10000": dict(task=quad(10000, spectrum="lognormal", sigma=1.5), rounds=30000, target=0.1,
                              metric="rel_suboptimality", eval_every=100, grid=QUAD_GRID, no_progress_after=0.1),
    # control for the oracle's failure at d = 10^4: the same problem with identical clients (no heterogeneity)
    "lognormal d=10000 homogeneous": dict(task=quad(10000, spectrum="lognormal", sigma=1.5, heterogeneity=0.0),
                                          rounds=30000, target=0.1, metric="rel_suboptimality", eval_every=100,
                                          grid=QUAD_GRID, no_progress_after=0.1, methods=ORACLES),
    "low rank k=10 d=100": dict(task=quad(100, spectrum="power", effective_rank=10.0), rounds=3000, target=0.1,
                                metric="rel_suboptimality", eval_every=10, grid=QUAD_GRID),
    "low rank k=10 d=1000": dict(task=quad(1000, spectrum="power", effective_rank=10.0), rounds=4000, target=0.1,
                                 metric="rel_suboptimality", eval_every=10, grid=QUAD_GRID),
    "low rank k=10 d=10000": dict(task=quad(10000, spectrum="power", effective_rank=10.0), rounds=30000,
                                  target=0.1, metric="rel_suboptimality", eval_every=100, grid=QUAD_GRID,
                                  no_progress_after=0.1),
    "digits CNN": dict(task={"name": "digits", "alpha": 1.0, "dev_fraction": 0.15}, rounds=1500, target=0.5,
                       metric="accuracy", eval_every=25, grid=[3e-3, 1e-2, 3e-2, 1e-1],
                       skip=("damped_oracle",) + ORACLES),
    # the LM tier: SmolLM2-135M-Instruct + LoRA r8 (q, v: 460,800 trainable) on Rotten Tomatoes, the federation
    # of workflows/config/base/smollm2_rotten_tomatoes_lora.yaml; target: loss <= 0.85 on the 200 test snippets
    # (zero-shot 1.198), tuning on 100 dev snippets held out of training. The grid stops at 3e-2: DeComFL at
    # 0.1 ended 30 rounds at dev loss 2.31 (in the tuning CSV), and HiSo's learned H on LoRA falls below 1,
    # so its effective step is larger than DeComFL's at the same lr. No learned-vs-true agreement here:
    # Hutchinson's diagonal over 460,800 LoRA weights with 16 probes on 32 snippets took 5 CPU-minutes and came
    # out negative in half of its entries (noise; LoRA's B starts at 0, so diag over A is ~0): not a reference.
    "SmolLM2 LoRA RT": dict(task={"name": "rotten_tomatoes", "model": "smollm2-135m-instruct", "trainable": "lora",
                                  "lora_rank": 8, "lora_targets": "q_proj,v_proj", "train_size": 2000,
                                  "dev_size": 100, "test_size": 200, "max_length": 64, "eval_batch_size": 50},
                            federation={"num_clients": 6, "clients_per_round": 2, "perturbations": 5,
                                        "mu": 1e-2, "batch_size": 16},
                            rounds=30, target=0.85, metric="test_loss", eval_every=3, grid=[3e-3, 1e-2, 3e-2],
                            # SecondDifference's H runs 10^2-10^3 above the true curvature on the quadratics
                            # (log10 scale 2-3.3), so its step sizes there were 10-30x the others'; at 3e-2
                            # on the LM it ended 30 rounds at dev loss 0.99: its grid extends upwards
                            grids={"second_difference": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1]},
                            skip=("damped_oracle",) + ORACLES, hutchinson=None),
}


def measure(spec: dict, method: dict, lr: float, seed: int, split: str, track: bool = False,
            max_rounds: int | None = None) -> dict:
    """One run through the suite's runner (hiso.run.run), stopped at the target or after `max_rounds` (default:
    the problem's budget): rounds, forward passes and bytes to the target (inf if not reached), the final
    metric, and with `track` the learned H's agreement with the true diagonal."""
    rounds = spec["rounds"] if max_rounds is None else min(spec["rounds"], max_rounds)
    fed_cfg = {**spec.get("federation", {}), **method.get("federation", {}), "rounds": rounds, "lr": lr}
    dev = split == "dev" and spec["task"]["name"] != "quadratic"  # the quadratic tunes on another instance
    cfg = load_config(data={"method": method.get("method", "hiso"), "seed": seed, "task": spec["task"],
                            "federation": fed_cfg, "curvature": method.get("curvature", {}),
                            "run": {"progress": False, "threads": 1, "eval_every": spec["eval_every"],
                                    "checkpoint_every": 0, "eval_split": "dev" if dev else "test"}})
    res = {"rounds": math.inf, "forward_passes": math.inf, "bytes": math.inf, "final": float("nan")}
    trace, cost = [], {"passes": 0, "bytes": 0}

    def count(fed):  # cumulative cost, for the cost at the round the target is reached
        inner = fed.run_round

        def counted():
            row = inner()
            cost["passes"] += row["forward_passes"]
            cost["bytes"] += row["bytes_up"] + row["bytes_down"]
            return row
        fed.run_round = counted

    def on_evaluate(fed, task, row):
        value, r = row[spec["metric"]], row["round"]
        res["final"] = value
        if track and task.__class__.__name__ == "Quadratic" and r % (10 * spec["eval_every"]) == 0:
            trace.append({"round": r, **agreement(fed.server.curvature.flat(), true_diagonal(task))})
        if reached(value, spec["metric"], spec["target"]):
            res.update(rounds=r, forward_passes=cost["passes"], bytes=cost["bytes"])
            return "target reached"
        if "no_progress_after" in spec and r >= spec["no_progress_after"] * spec["rounds"] and value > 1.0:
            res["error"] = f"no progress (rel. suboptimality {value:.3g} > 1 at round {r})"
            return res["error"]
        return None
    t0 = time.perf_counter()
    fed = None
    try:
        fed = run(cfg, federation_hook=count, on_evaluate=on_evaluate).federation
    except RunFailed as e:  # a diverged step size, or a curvature error: a failed grid point, recorded as such
        res["error"] = "diverged" if e.status == "diverged" else e.message.split(":")[0]
    res["seconds"] = time.perf_counter() - t0
    if track and fed is not None and "error" not in res and spec.get("hutchinson", {}) is not None:
        fed.load_server_model()
        task = fed.task
        hutch = spec.get("hutchinson") or {}
        batch = task.batch(0, np.random.default_rng(0), hutch["batch"]) if "batch" in hutch else None
        true = true_diagonal(task, samples=hutch.get("samples", 64), batch=batch)
        learned = fed.server.curvature.flat()
        res.update({f"H_{k}": v for k, v in agreement(learned, true).items()})
        res.update({f"H_{k}": v for k, v in zeta(learned, true).items()})
        res["trace"] = trace
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None, help="the problem of this exact name, else those whose name contains it")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods")
    ap.add_argument("--quick", action="store_true", help="every other grid point, 1 evaluation seed")
    ap.add_argument("--no-equal-lr", action="store_true", help="skip the equal-step-size pass")
    ap.add_argument("--out", default=None, help="write <out>_{tuning,eval}.csv and <out>.md; rows already in "
                    "them are kept and not rerun (an interrupted study resumes; other problems' rows stay)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    eval_seeds = [0] if args.quick else [0, 1, 2]
    store = Store(args.out)
    exact = args.only is not None and any(args.only.strip() == p.strip() for p in PROBLEMS)
    for pname, spec in PROBLEMS.items():  # --only: an exact problem name, else any name containing the text
        if args.only and (args.only.strip() != pname.strip() if exact else args.only not in pname):
            continue
        methods = {m: v for m, v in METHODS.items() if m.split(" ")[0] not in spec.get("skip", ())
                   and m in spec.get("methods", METHODS)
                   and (args.methods is None or m.split(" ")[0] in args.methods.split(","))}
        chosen = {}
        for mname, method in methods.items():
            grid = spec.get("grids", {}).get(mname, spec["grid"])  # a method's own grid where the problem has one
            chosen[mname] = tune(store, pname, spec, mname, method, grid[::2] if args.quick else grid)
        ref_lr = chosen.get("identity (DeComFL)")
        for s in eval_seeds:  # seeds outermost: a study stopped early has every method at the first seeds
            for mname, method in methods.items():
                for protocol, lr in (("tuned", chosen[mname]), ("equal lr", ref_lr)):
                    if lr is None or (protocol == "equal lr" and (mname == "identity (DeComFL)" or args.no_equal_lr)):
                        continue
                    key = dict(problem=pname, method=mname, protocol=protocol, lr=lr, seed=s)
                    r = store.get("eval", key)
                    if r is None:
                        r = measure(spec, method, lr, seed=s, split="test", track=protocol == "tuned")
                        r["trace"] = json.dumps(r.pop("trace", []))
                        store.add("eval", {**key, **r})
                    print(f"eval {pname} {mname:20s} {protocol:8s} lr={lr:<9.3g} seed={s} rounds={r['rounds']} "
                          f"final={r['final']:.4g} spearman={r.get('H_spearman', float('nan')):.3f} "
                          f"{r.get('error', '') or ''} ({r['seconds']:.1f}s)", flush=True)
    report = summarise(store.frame("eval"), store.frame("tuning"))
    print(report)
    if args.out:
        atomic_write(Path(f"{args.out}.md"), report)


def tune(store: Store, pname: str, spec: dict, mname: str, method: dict, grid) -> float:
    """The step size hiso.tuning's protocol picks on the tuning instance (every tried point in the tuning CSV)."""
    def evaluate(lr: float, cap: int | None, note: str | None) -> dict:
        key = dict(problem=pname, method=mname, lr=float(lr))
        r = store.get("tuning", key)
        if r is None:
            r = measure(spec, method, float(lr), seed=100, split="dev", max_rounds=cap)
            if cap is not None and math.isinf(r["rounds"]):
                r["error"] = r.get("error") or f"stopped at {cap} rounds (2x the best)"
            if note:
                r[note] = True  # a CSV column: `extended` or `refined`
            store.add("tuning", {**key, **r})
        print(f"tune {pname} {mname:20s} lr={lr:<9.3g} rounds={r['rounds']} final={r['final']:.4g} "
              f"{r.get('error', '') or ''} ({f'{note} grid; ' if note else ''}{r['seconds']:.1f}s)", flush=True)
        return r
    return tuning.tune(evaluate, grid, HIGHER_IS_BETTER.get(spec["metric"], True), spec["rounds"], MAX_EXTENSION)


class Store:
    """The study's rows, kept in <out>_{tuning,eval}.csv and rewritten atomically after every run."""

    def __init__(self, out: str | None):
        self.out, self.rows = out, {"tuning": [], "eval": []}
        for kind in self.rows:
            path = self.path(kind)
            if path is not None and path.exists():
                df = pd.read_csv(path, keep_default_na=False, na_values=[""])
                self.rows[kind] = [{k: ("" if k in ("error", "trace") and not isinstance(v, str) else v)
                                    for k, v in row.items()} for row in df.to_dict("records")]

    def path(self, kind: str) -> Path | None:
        return None if self.out is None else Path(f"{self.out}_{kind}.csv")

    def get(self, kind: str, key: dict) -> dict | None:
        for row in self.rows[kind]:
            if all(_same(row.get(k), v) for k, v in key.items()):
                return row
        return None

    def add(self, kind: str, row: dict) -> None:
        self.rows[kind].append(row)
        if self.out is not None:
            buf = io.StringIO()
            self.frame(kind).to_csv(buf, index=False)
            atomic_write(self.path(kind), buf.getvalue())

    def frame(self, kind: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows[kind])


def _same(a, b) -> bool:
    if isinstance(b, float):
        return isinstance(a, (int, float)) and math.isclose(float(a), b, rel_tol=1e-12)
    return a == b


def oracle_share(t: pd.DataFrame, budget: dict[str, float] | None = None) -> pd.Series:
    """Per row of t (problem, method, rounds): the share of the oracle's round reduction over DeComFL it recovers,
    (DeComFL - rounds) / (DeComFL - best oracle variant).  Where DeComFL never reached the target and the round
    budget is given, DeComFL is counted at the budget: a lower bound (the share grows with DeComFL's rounds
    for any method no faster than the oracle).  NaN where undefined."""
    share = pd.Series(math.nan, index=t.index)
    for p in t.problem.unique():
        m = t.problem == p
        base = t[m & (t.method == "identity (DeComFL)")].rounds
        orc = t[m & t.method.isin(ORACLES)].rounds.min()
        if not len(base) or not math.isfinite(orc):
            continue
        b = base.iloc[0] if budget is None else (budget.get(p, math.nan) if math.isinf(base.iloc[0]) else math.nan)
        if math.isfinite(b) and b > orc:
            share[m] = ((b - t[m].rounds) / (b - orc)).where(t[m].rounds < math.inf)
    return share


def with_oracle_shares(t: pd.DataFrame, budgets: dict[str, float]) -> pd.DataFrame:
    """t with oracle_gain_lower_bound (only where DeComFL never reached the target) and oracle_gain_recovered."""
    return t.assign(oracle_gain_lower_bound=oracle_share(t, budgets), oracle_gain_recovered=oracle_share(t))


def summary_tables(ev: pd.DataFrame, tuning: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The study's tables: medians over the test seeds per protocol ("tuned", "equal lr") and, given the tuning
    rows, "tuning instance": each tuned method's run on the tuning instance at its chosen lr, where every
    method's lr is best by construction (so DeComFL's lr not carrying over to the test instances cannot
    flatter the others)."""
    tables = {}
    budgets = {p: spec["rounds"] for p, spec in PROBLEMS.items()}
    for protocol in ("tuned", "equal lr"):
        sub = ev[ev.protocol == protocol]
        if sub.empty:
            continue
        mixed = sub.groupby(["problem", "method"]).lr.nunique()
        if (mixed > 1).any():  # e.g. a re-tuned method whose runs at its old step size are still in the CSV
            raise ValueError(f"{protocol} runs at more than one lr for {list(mixed[mixed > 1].index)}: "
                             f"remove the stale rows from the eval CSV")
        agg = {"lr": ("lr", "first"), "rounds": ("rounds", "median"), "rounds_per_seed": ("rounds", list),
               "forward_passes": ("forward_passes", "median"), "bytes": ("bytes", "median"),
               "final_median": ("final", "median")}
        if protocol == "tuned":  # agreement with the true diagonal, where it was measured
            agg.update({k: (c, "median") for k, c in (("spearman", "H_spearman"), ("log10_scale", "H_log10_scale"),
                                                      ("log10_spread", "H_log10_spread"), ("zeta", "H_zeta"),
                                                      ("eff_rank_whitened", "H_eff_rank_whitened"))
                        if c in sub.columns})
        t = sub.groupby(["problem", "method"], sort=False).agg(**agg).reset_index()
        if protocol == "tuned":  # share of the oracle's round reduction over DeComFL that each method recovers
            t = with_oracle_shares(t, budgets)
            if tuning is not None and not tuning.empty:
                rows = t[["problem", "method", "lr"]].merge(tuning[["problem", "method", "lr", "rounds", "final"]],
                                                           on=["problem", "method", "lr"], how="left")
                tables["tuning instance"] = with_oracle_shares(rows, budgets)
        tables[protocol] = t
    return tables


TITLES = {"tuned": "tuned: median over seeds (rounds, forward passes, bytes to target)",
          "tuning instance": "tuning instance (seed 100) at each method's chosen lr",
          "equal lr": "equal lr: median over seeds (rounds, forward passes, bytes to target)"}


def summarise(ev: pd.DataFrame, tuning: pd.DataFrame | None = None) -> str:
    """summary_tables as markdown."""
    tables = summary_tables(ev, tuning)
    return "\n".join(f"## {TITLES[k]}\n\n{tables[k].to_markdown(index=False, floatfmt='.3g')}\n"
                     for k in TITLES if k in tables)


if __name__ == "__main__":
    main()
