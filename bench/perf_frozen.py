"""A frozen base in bfloat16 against float32 for LoRA (`task.frozen_dtype`): its effect on the metric and on the
time per round, on one SmolLM2 problem, runs of both dtypes alternated seed by seed in one process.

The problem is workflows/config/base/smollm2_rotten_tomatoes_lora.yaml (SmolLM2-135M-Instruct + LoRA r8, 6
clients, 2 per round, P = 5) with HiSo at its base step size, evaluated on the 200 test snippets every
`eval_every` rounds on `test_size` test snippets.  The adapters stay fp32 in both; only the frozen weights
change dtype.  Rows: one per dtype, seed and evaluation (round, test loss, accuracy, and the run's median seconds
per training round, evaluation rounds excluded), then one summary row per dtype (seed "all": the last
evaluation's mean and standard deviation over seeds, and the time per round over float32's).
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "workflows" / "config" / "base" / "smollm2_rotten_tomatoes_lora.yaml"


def bench_frozen(rounds: int = 10, seeds: tuple[int, ...] = (0, 1), eval_every: int = 5,
                 test_size: int = 100) -> list[dict]:
    from hiso.config import load_config
    from hiso.run import run
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for dtype in ("float32", "bfloat16"):  # alternated: a load change hits both alike
                cfg = load_config(BASE, overrides=[f"task.frozen_dtype={dtype}", f"seed={seed}", "method=hiso",
                                                   f"federation.rounds={rounds}", f"run.eval_every={eval_every}",
                                                   "run.progress=false", "run.checkpoint_every=0",
                                                   "run.keep_checkpoint=false", "run.threads=1",
                                                   f"task.test_size={test_size}"])
                res = run(cfg, Path(tmp) / f"{dtype}-{seed}")
                m = res.metrics
                train = m[m["accuracy"].isna()]["wall_seconds"] if m["accuracy"].isna().any() else m["wall_seconds"]
                per_round = statistics.median(train.tolist())
                rows.append({"frozen_dtype": dtype, "seed": seed, "round": 0, **_eval(res.initial_eval),
                             "s_per_round": per_round})
                for r in m.dropna(subset=["accuracy"]).itertuples():
                    rows.append({"frozen_dtype": dtype, "seed": seed, "round": int(r.round),
                                 "test_loss": float(r.test_loss), "accuracy": float(r.accuracy),
                                 "s_per_round": per_round})
    df = pd.DataFrame(rows)
    last = df[df["round"] == df["round"].max()]
    base = last[last["frozen_dtype"] == "float32"]["s_per_round"].median()
    for dtype, g in last.groupby("frozen_dtype", sort=False):
        rows.append({"frozen_dtype": dtype, "seed": "all", "round": int(g["round"].iloc[0]),
                     "test_loss": g["test_loss"].mean(), "test_loss_std": g["test_loss"].std(ddof=1),
                     "accuracy": g["accuracy"].mean(), "accuracy_std": g["accuracy"].std(ddof=1),
                     "s_per_round": g["s_per_round"].median(), "time_over_float32": g["s_per_round"].median() / base})
    return rows


def _eval(ev: dict) -> dict:
    return {"test_loss": float(ev["test_loss"]), "accuracy": float(ev["accuracy"])}
