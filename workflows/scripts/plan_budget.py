"""The size and GPU budget of a tier's plan, from the same plan the workflow runs (hiso.plan).

For every run: forward passes = rounds x passes per round (ZO: sampled clients x tau x (P + 1), or 2P + 1
with central differences; first order: sampled clients x tau x 3, a backward pass counted as two forwards)
plus evaluations (test examples / batch, every eval_every rounds).  Seconds per forward pass of one batch
come from a bench/gpu_check.py JSON (`--measured`, forward_s at its batch and length, scaled by tokens), or,
without one, from 2 N FLOPs per token at an assumed sustained rate (`--tflops`), stated in the output.

  .venv/bin/python workflows/scripts/plan_budget.py --configfile workflows/config/paper.yaml --md docs/paper-budget.md
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import yaml

from hiso import plan

# parameters (N) of the planned models, and mean prompt tokens per example of each task (an assumption:
# OPT tokenizer on the public splits, rounded; SST-2 capped at its max_length of 32)
PARAMS = {"opt-125m": 125e6, "opt-350m": 331e6, "opt-1.3b": 1.32e9, "opt-2.7b": 2.65e9,
          "llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9}
TOKENS = {"sst2": 25, "qqp": 45, "squad": 190, "cb": 90, "wsc": 40, "wic": 45, "rte": 80, "boolq": 150}
TEST_ROWS = {"sst2": 872, "qqp": 40430, "squad": 10570, "cb": 56, "wsc": 104, "wic": 638, "rte": 277, "boolq": 3270}


def run_cost(cfg) -> tuple[float, float]:
    """(training forward passes of one batch, evaluation forward passes of one eval batch) of one run."""
    f = cfg.federation
    if cfg.method in ("fedavg", "fedadam", "fedyogi", "fedadagrad", "fo"):
        per_round = f.clients_per_round * f.local_steps * 3
    elif cfg.method in ("mezo", "mezo_momentum", "zo_adam", "hizoo"):
        per_round = f.local_steps * (f.perturbations + 1)
    else:
        passes = 2 * f.perturbations + 1 if f.difference == "central" else f.perturbations + 1
        per_round = f.clients_per_round * f.local_steps * passes
    task = cfg.task["name"]
    rows = min(cfg.task["test_size"], TEST_ROWS.get(task, cfg.task["test_size"]))
    if cfg.run.eval_split == "dev":
        rows = cfg.task["dev_size"]
    evals = math.ceil(f.rounds / cfg.run.eval_every) + 1
    gen = cfg.task.get("max_new_tokens", 0) if task == "squad" else 0  # one pass per generated token
    eval_passes = evals * math.ceil(rows / cfg.task["eval_batch_size"]) * (1 + gen)
    return f.rounds * per_round, eval_passes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", required=True)
    ap.add_argument("--tflops", type=float, default=150.0,
                    help="assumed sustained TFLOP/s of one GPU (fp32 weights, TF32 matmuls) without --measured")
    ap.add_argument("--measured", default=None, help="a bench/gpu_check.py JSON with forward_s per model")
    ap.add_argument("--md", default=None)
    a = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load(Path(a.configfile).read_text())
    measured = json.loads(Path(a.measured).read_text()) if a.measured else None
    hours = defaultdict(float)
    runs = defaultdict(int)
    exps = plan.experiments(config)
    for exp, method, seed, cfg in plan.run_configs(config, exps, root):
        spec = exps[exp]
        model, task = cfg.task["model"], cfg.task["name"]
        train, evals = run_cost(cfg)
        tok = TOKENS.get(task, 64)
        batch_tokens = cfg.federation.batch_size * tok
        eval_tokens = cfg.task["eval_batch_size"] * tok
        if measured and model in measured["models"]:
            per_token = measured["models"][model]["forward_s"] / (measured["batch"] * measured["seq"])
        else:
            per_token = 2 * PARAMS[model] / (a.tflops * 1e12)
        stage = "tuning" if plan.is_tuning(config, spec, method, seed) else "reported"
        key = (exp.split("-")[0], model, stage)
        hours[key] += (train * batch_tokens + evals * eval_tokens) * per_token / 3600
        runs[key] += 1
    lines = ["| grid | model | stage | runs | GPU-hours |", "|---|---|---|---:|---:|"]
    for key in sorted(hours):
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {runs[key]} | {hours[key]:.1f} |")
    total_runs, total_hours = sum(runs.values()), sum(hours.values())
    lines.append(f"| **all** | | | **{total_runs}** | **{total_hours:.0f}** |")
    basis = (f"measured forward times from {a.measured}" if measured else
             f"2 N FLOPs per token at an assumed {a.tflops:g} TFLOP/s sustained (replace with --measured "
             "bench/gpu_check.py output from the target GPU)")
    text = (f"Plan of `{a.configfile}`: {total_runs} runs, about {total_hours:.0f} GPU-hours on one GPU per run.\n"
            f"Basis: {basis}; prompt lengths per task are the assumptions in workflows/scripts/plan_budget.py.\n"
            f"Command: `.venv/bin/python workflows/scripts/plan_budget.py --configfile {a.configfile}"
            f"{' --measured ' + a.measured if measured else ''}`\n\n" + "\n".join(lines) + "\n")
    print(text)
    if a.md:
        Path(a.md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.md).write_text(text)


if __name__ == "__main__":
    main()
