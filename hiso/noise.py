"""The noise floor beside every comparison: how far an outcome moves under rounding alone, summaries that a
last bit cannot flip, and claims made only where the paired difference over seeds exceeds both spreads.

- Rounding twins.  An experiment with `rounding: true` (or a list of seeds) also runs every reported method on
  those seeds with `run.init_ulps: 1`: the same config and seed, the initial trainable model moved by one ulp
  (each entry to the next float towards +inf).  Its run folder is `<method>+ulp`.  The rounding spread of a method
  is the mean over seeds of |final(twin) - final(run)|: what a last-bit change (another CPU's kernels, another
  library version) does to its result.  Tables show it beside the seed spread (std over seeds).
- Robust summaries: beside the final metric, the mean of the last `LAST_K` evaluations and the best so far.
- Claims: a method against the reference (DeComFL) by the paired difference of the final metric over the seeds
  both ran, with a 95 % t interval.  "better" / "worse" only where the interval excludes 0 and |mean| exceeds both
  the seed spread (the larger std of the two) and the rounding spread (the larger of the two); otherwise
  "not distinguishable" with the reason.  The same claim of the best evaluation (`claim at best vs <ref>`), with
  that summary's own seed and rounding spreads, for runs whose metric drifts back after its best.
- Selected on dev: where the runs also evaluated a dev split (`run.also_dev`: `dev_loss` beside `test_loss`), the
  test metric at each run's best dev evaluation (the earliest, on ties): early stopping as MeZO reports it, a
  round chosen without looking at the test set, unlike the best test evaluation.  It gets its own paired claim
  (`claim at best dev vs <ref>`) with its own spreads.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TWIN = "+ulp"  # suffix of a rounding twin's method folder
LAST_K = 3  # evaluations averaged for the "last evaluations" summary


def nudge_ulps(params, k: int) -> None:
    """Move every entry of the trainable tensors `k` floats towards +inf (in place): a rounding-level change of the
    initial model (run.init_ulps)."""
    import torch
    with torch.no_grad():
        for p in params:
            for _ in range(k):
                p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))


def twin_seeds(rounding, seeds, key: str, what: str) -> list[int]:
    """`rounding:` (true: every seed of `seeds`, or a list of them) -> the seeds that get a rounding twin (none when
    it is unset or false); ValueError naming the key and the seeds that are not `what`."""
    if not rounding:
        return []
    twins = list(seeds) if rounding is True else [int(s) for s in rounding]
    missing = sorted(set(twins) - set(seeds))
    if missing:
        raise ValueError(f"{key}: {rounding!r}: seeds {missing} are not {what} ({sorted(seeds)})")
    return twins


def split_twins(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the reported runs, the rounding twins) of a frame of runs (hiso.results.load_runs)."""
    twin = runs["method"].str.endswith(TWIN)
    return runs[~twin], runs[twin]


def dev_column(metric: str) -> str:
    """The dev split's column of a test metric (run.also_dev): test_loss -> dev_loss, accuracy -> dev_accuracy."""
    return "dev_" + metric.removeprefix("test_")


def finals(runs: pd.DataFrame, metric: str, higher: bool = True, last_k: int = LAST_K) -> pd.DataFrame:
    """One row per (method, seed): final, mean of the last `last_k` evaluations (NaN when diverged), best so far,
    and the metric at the run's best dev evaluation (`at_dev`, NaN without a dev column)."""
    rows = []
    dev = dev_column(metric)
    for (method, seed), run in runs.groupby(["method", "seed"], sort=False):
        run = run.sort_values("round")
        values = run[metric].dropna()
        lost = run["status"].iloc[0] == "diverged" or values.empty
        at_dev = math.nan
        if dev in run.columns:
            both = run.dropna(subset=[dev, metric])
            if not both.empty:
                pick = both[dev].to_numpy().argmax() if higher else both[dev].to_numpy().argmin()  # earliest on ties
                at_dev = float(both[metric].iloc[pick])
        rows.append({"method": method, "seed": seed,
                     "final": math.nan if lost else float(values.iloc[-1]),
                     "last": math.nan if lost else float(values.iloc[-last_k:].mean()),
                     "best": math.nan if values.empty else float(values.max() if higher else values.min()),
                     "at_dev": at_dev})
    return pd.DataFrame(rows, columns=["method", "seed", "final", "last", "best", "at_dev"])


def rounding_spread(per_seed: pd.DataFrame, twin_seed: pd.DataFrame,
                    col: str = "final") -> dict[str, tuple[float, int]]:
    """method -> (mean |col(twin) - col(run)| over the seeds that have a twin, number of such seeds), from the
    runs' and the twins' summaries (finals: one row per method and seed; col "final" or "best")."""
    if twin_seed.empty:
        return {}
    a = per_seed.set_index(["method", "seed"])[col]
    b = twin_seed.assign(method=twin_seed["method"].str.removesuffix(TWIN))
    out = {}
    for method, grp in b.groupby("method"):
        diffs = [abs(getattr(row, col) - a.get((method, row.seed), math.nan)) for row in grp.itertuples()]
        diffs = [d for d in diffs if not math.isnan(d)]
        out[method] = (float(np.mean(diffs)) if diffs else math.nan, len(diffs))
    return out


def t95(n: int) -> float:
    """The two-sided 95 % quantile of Student's t with n - 1 degrees of freedom."""
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1))


def paired(per_seed: pd.DataFrame, method: str, ref: str, col: str = "final") -> dict:
    """Paired difference col(method) - col(ref) over the seeds both finished: mean, 95 % CI, n."""
    a = per_seed[per_seed.method == method].set_index("seed")[col]
    b = per_seed[per_seed.method == ref].set_index("seed")[col]
    d = (a - b).dropna()
    n = len(d)
    if n < 2:
        return {"n": n, "mean": float(d.mean()) if n else math.nan, "lo": math.nan, "hi": math.nan}
    half = t95(n) * float(d.std(ddof=1)) / math.sqrt(n)
    return {"n": n, "mean": float(d.mean()), "lo": float(d.mean()) - half, "hi": float(d.mean()) + half}


def verdict(diff: dict, seed_spread: float, round_spread: float, higher: bool) -> str:
    """The claim a paired difference carries, in words."""
    if diff["n"] < 2:
        return f"not distinguishable: {diff['n']} paired seed(s)"
    if diff["lo"] <= 0 <= diff["hi"]:
        return "not distinguishable: the 95 % interval contains 0"
    size = abs(diff["mean"])
    if not size > seed_spread:
        return f"not distinguishable: |difference| {size:.3g} <= seed spread {seed_spread:.3g}"
    if math.isnan(round_spread):
        return ("better" if (diff["mean"] > 0) == higher else "worse") + " (rounding spread not measured)"
    if not size > round_spread:
        return f"not distinguishable: |difference| {size:.3g} <= rounding spread {round_spread:.3g}"
    return "better" if (diff["mean"] > 0) == higher else "worse"


def noise_columns(table: pd.DataFrame, runs: pd.DataFrame, twins: pd.DataFrame, metric: str,
                  ref: str | None, higher: bool) -> pd.DataFrame:
    """The summary table (hiso.results.summarise) with the robust summaries, the rounding spread beside the seed
    spread, and each method's paired claim against the reference."""
    per_seed = finals(runs, metric, higher)
    twin_seed = finals(twins, metric, higher)
    spread = rounding_spread(per_seed, twin_seed)
    by = per_seed.groupby("method")
    table = table.copy()
    table[f"last-{LAST_K} {metric} mean"] = table["method"].map(by["last"].mean())
    table[f"best {metric} mean"] = table["method"].map(by["best"].mean())
    dev = per_seed["at_dev"].notna().any()  # the runs read a dev split: the test metric at the best dev round
    if dev:
        table[f"{metric} at best dev mean"] = table["method"].map(by["at_dev"].mean())
        table[f"{metric} at best dev std"] = table["method"].map(by["at_dev"].std())
    table["rounding spread"] = table["method"].map(lambda m: spread.get(m, (math.nan, 0))[0])
    table["rounding pairs"] = table["method"].map(lambda m: spread.get(m, (math.nan, 0))[1]).astype(int)
    if ref is None or ref not in set(table["method"]):
        return table
    # the final evaluation, and the best one (a run whose metric drifts back after its best is compared both ways),
    # and the one at the best dev round where there is one
    stds = {"final": table.set_index("method")[f"final {metric} std"], "best": by["best"].std()}
    spreads = {"final": spread, "best": rounding_spread(per_seed, twin_seed, "best")}
    claims = [("final", f"claim vs {ref}"), ("best", f"claim at best vs {ref}")]
    if dev:
        stds["at_dev"], spreads["at_dev"] = by["at_dev"].std(), rounding_spread(per_seed, twin_seed, "at_dev")
        table[f"{metric} at best dev rounding spread"] = table["method"].map(
            lambda m: spreads["at_dev"].get(m, (math.nan, 0))[0])
        claims.append(("at_dev", f"claim at best dev vs {ref}"))
    for col, claim_col in claims:
        cols = {k: [] for k in ("n", "mean", "lo", "hi", "claim")}
        for method in table["method"]:
            d = paired(per_seed, method, ref, col)
            seed_spread = np.nanmax([stds[col].get(method, math.nan), stds[col].get(ref, math.nan), 0.0])
            rs = [spreads[col].get(m, (math.nan, 0))[0] for m in (method, ref)]
            round_spread = math.nan if all(math.isnan(x) for x in rs) else float(np.nanmax(rs))
            claim = "reference" if method == ref else verdict(d, seed_spread, round_spread, higher)
            for k in ("n", "mean", "lo", "hi"):
                cols[k].append(d[k])
            cols["claim"].append(claim)
        if col == "final":
            table[f"paired seeds vs {ref}"] = cols["n"]
        name = "at best dev" if col == "at_dev" else col
        table[f"{name} minus {ref}'s (mean)"] = cols["mean"]
        table[f"{name} minus {ref}'s (95% CI low)"] = cols["lo"]
        table[f"{name} minus {ref}'s (95% CI high)"] = cols["hi"]
        table[claim_col] = cols["claim"]
    return table
