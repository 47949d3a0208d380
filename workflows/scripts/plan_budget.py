"""The size and GPU budget of a tier's plan, from the same plan the workflow runs (hiso.plan).

For every run: client steps = rounds x sampled clients x tau (MeZO: rounds x tau), each costing
ratio x (P + 1) forward passes of one batch (first order: 3 forward passes, a backward pass counted as two), plus
one server apply per round and the evaluations (test examples / batch, every eval_every rounds).  A forward pass
costs 2 N FLOPs per token at the fp32 matmul rate, and the ZO step's ratio comes from the GPU time model
(bench/timemodel.py: the perf tier's dispatch counts of the flat layout with stated H200 constants; P scales the
counts by (P + 1) / 6).  A bench/gpu_check.py JSON (`--measured`) replaces both with measured forward times and
step ratios.

  .venv/bin/python workflows/scripts/plan_budget.py --configfile workflows/config/paper.yaml --md docs/paper-budget.md
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the working tree's code, not another checkout's
from bench import memmodel, timemodel  # noqa: E402
from hiso import plan  # noqa: E402

# parameters (N) of the planned models, and mean prompt tokens per example of each task (an assumption:
# OPT tokenizer on the public splits, rounded; SST-2 capped at its max_length of 32)
PARAMS = {"opt-125m": 125e6, "opt-350m": 331e6, "opt-1.3b": 1.32e9, "opt-2.7b": 2.65e9,
          "llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9}
# of which embeddings (token + position tables: look-ups, no FLOPs) and the head (vocab x width, tied to the
# token table; logits_to_keep=1 applies it at one position), from the models' configs
EMBEDDING = {"opt-125m": (50272 + 2050) * 768, "opt-350m": 50272 * 512 + 2050 * 1024, "opt-1.3b": (50272 + 2050) * 2048,
             "opt-2.7b": (50272 + 2050) * 2560, "llama-3.2-1b": 128256 * 2048, "llama-3.2-3b": 128256 * 3072}
HEAD = {"opt-125m": 50272 * 768, "opt-350m": 50272 * 512, "opt-1.3b": 50272 * 2048, "opt-2.7b": 50272 * 2560,
        "llama-3.2-1b": 128256 * 2048, "llama-3.2-3b": 128256 * 3072}
TOKENS = {"sst2": 25, "qqp": 45, "squad": 190, "cb": 90, "wsc": 40, "wic": 45, "rte": 80, "boolq": 150}
TEST_ROWS = {"sst2": 872, "qqp": 40430, "squad": 10570, "cb": 56, "wsc": 104, "wic": 638, "rte": 277, "boolq": 3270}


FIRST_ORDER = ("fedavg", "fedadam", "fedyogi", "fedadagrad", "fo")
CENTRAL = ("mezo", "mezo_momentum", "zo_adam", "hizoo")


def run_cost(cfg) -> tuple[float, float, int]:
    """(client steps, evaluation forward passes of one eval batch, rounds) of one run."""
    f = cfg.federation
    clients = 1 if cfg.method in CENTRAL else f.clients_per_round
    task = cfg.task["name"]
    rows = min(cfg.task["test_size"], TEST_ROWS.get(task, cfg.task["test_size"]))
    if cfg.run.eval_split == "dev":
        rows = cfg.task["dev_size"]
    evals = math.ceil(f.rounds / cfg.run.eval_every) + 1
    gen = cfg.task.get("max_new_tokens", 0) if task == "squad" else 0  # one pass per generated token
    eval_passes = evals * math.ceil(rows / cfg.task.get("eval_batch_size_cuda", 256)) * (1 + gen)  # a GPU's batches
    return f.rounds * clients * f.local_steps, eval_passes, f.rounds


def flops_of(model: str, tokens: int, sequences: int) -> float:
    return timemodel.forward_flops(PARAMS[model], EMBEDDING[model], HEAD[model], tokens, sequences)


def step_seconds(cfg, model: str, tokens: int, dispatch, dev, measured) -> tuple[float, float, float]:
    """(seconds of one client step, of one server apply, of one forward pass of `tokens` tokens)."""
    f = cfg.federation
    if measured and model in measured["models"]:
        m = measured["models"][model]
        fwd = m["forward_s"] * tokens / (measured["batch"] * measured["seq"])
    else:
        m, fwd = None, flops_of(model, tokens, f.batch_size) / dev.fp32_flops
    if cfg.method in FIRST_ORDER:
        return 3 * fwd, 0.0, fwd
    passes = 2 * f.perturbations + 1 if f.difference == "central" else f.perturbations + 1
    kind = "hiso" if cfg.method == "hiso" else "decomfl"  # other ZO methods: the identity-curvature machinery
    if m is not None and f"{kind}_flat_step_over_P1_forwards" in m:  # measured on CUDA's default layout
        return m[f"{kind}_flat_step_over_P1_forwards"] * passes * fwd, m[f"{kind}_flat_replay_round_s"], fwd
    row = dict(timemodel.row_for(dispatch, PARAMS[model], kind, "flat"))
    c, s = (f.perturbations + 1) / (row["P"] + 1), f.perturbations / row["P"]
    for k in ("client_bytes_over_4d", "client_drawn_over_d", "client_launch"):
        row[k] *= c
    for k in ("server_bytes_over_4d", "server_drawn_over_d", "server_launch"):
        row[k] *= s
    p = timemodel.predict(row, tokens, PARAMS[model], dev, flops_of(model, tokens, f.batch_size))
    step = p["step_s"] - (row["P"] + 1) * p["forward_s"] + passes * p["forward_s"]  # central: 2P (+ 1) passes
    return step, p["server_apply_s"], fwd


def _over_md(over: list[dict]) -> str:
    """The reported runs that outlast one job's runtime: each resumes from its last checkpoint in the next job
    (the tier's `retries`); the table says how many jobs a run needs and how much work a kill can lose."""
    if not over:
        return "\nEvery reported run fits in one job's `runtime`.\n"
    import pandas as pd
    df = pd.DataFrame(over).groupby(["experiment", "rounds", "runtime h", "jobs allowed (1 + retries)",
                                     "checkpoint every (rounds)"], as_index=False).agg(
        {"method": lambda m: ", ".join(sorted(set(m))), "predicted h": "max", "jobs needed": "max",
         "minutes between checkpoints": "max"})
    short = df[df["jobs needed"] > df["jobs allowed (1 + retries)"]]
    verdict = ("Every one finishes within its retries." if short.empty else
               f"{len(short)} experiment(s) need more jobs than their retries allow: raise `retries` or `runtime`.")
    return ("\nReported runs predicted to outlast one job's `runtime` (the slowest method of each experiment): a "
            "cluster stops the job, and the retry resumes from the last checkpoint, losing at most the minutes "
            f"between checkpoints. {verdict}\n\n" + df.to_markdown(index=False, floatfmt=".3g") + "\n")


def _memory_md(peak: dict, card_gib: float = 80e9 / 2**30) -> str:
    """Per model x method: the predicted peak GPU memory of its largest cell (bench/memmodel.py), and the cells that
    cannot fit an 80 GB card."""
    import pandas as pd
    rows = [{"model": m, "method": meth, "trainable": tr, "largest cell": task,
             **{k: v / memmodel.GIB for k, v in mem.items()}} for (m, meth, tr), (mem, task) in sorted(peak.items())]
    df = pd.DataFrame(rows).rename(columns={"base": "model GiB", "state": "method state GiB",
                                            "activations": "activations GiB", "peak": "peak GiB"})
    big = df[df["peak GiB"] > card_gib]
    verdict = ("Every cell fits an 80 GB card." if big.empty else
               "Cells predicted not to fit an 80 GB card (they need a larger card such as the H200's 141 GB, a "
               "smaller batch, or a frozen base in bfloat16): " +
               "; ".join(f"{r.model} {r.method} on {r._4} ({r._8:.0f} GiB)" for r in big.itertuples()) + ".")
    return ("\nPredicted peak GPU memory per model x method, at its largest cell (bench/memmodel.py: the model, the "
            "method's resident state, and the activations of a batch padded to twice the task's mean prompt; "
            "first-order methods keep theirs for the backward pass). The CUDA context and allocator slack are not "
            f"counted. {verdict}\n\n" + df.to_markdown(index=False, floatfmt=".3g") + "\n")


def _shown(path: str, root: Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", required=True)
    ap.add_argument("--device", default="h200", choices=sorted(timemodel.DEVICES),
                    help="the constant set of the time model (bench/timemodel.py) without --measured")
    ap.add_argument("--tflops", type=float, default=None,
                    help="override the set's sustained fp32 matmul TFLOP/s")
    ap.add_argument("--measured", default=None, help="a bench/gpu_check.py JSON with forward_s per model")
    ap.add_argument("--dispatch", default=str(timemodel.DISPATCH), help="the perf tier's dispatch.csv")
    ap.add_argument("--md", default=None)
    a = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load(Path(a.configfile).read_text())
    measured = json.loads(Path(a.measured).read_text()) if a.measured else None
    import dataclasses
    dev = timemodel.DEVICES[a.device]
    if a.tflops is not None:
        dev = dataclasses.replace(dev, fp32_flops=a.tflops * 1e12)
    dispatch = timemodel.load(a.dispatch)
    hours = defaultdict(float)
    fwd_hours = defaultdict(float)
    runs = defaultdict(int)
    peak = defaultdict(lambda: ({"peak": -1.0}, ""))  # (model, method, trainable) -> (largest memory terms, task)
    over: list[dict] = []  # reported runs whose predicted time exceeds their job's runtime limit
    exps = plan.experiments(config)
    for exp, method, seed, cfg in plan.run_configs(config, exps, root):
        spec = exps[exp]
        model, task = cfg.task["model"], cfg.task["name"]
        steps, evals, rounds = run_cost(cfg)
        tok = TOKENS.get(task, 64)
        step_s, server_s, fwd_s = step_seconds(cfg, model, cfg.federation.batch_size * tok, dispatch, dev, measured)
        eval_batch = cfg.task.get("eval_batch_size_cuda", 256)  # a GPU evaluates in its own batch size
        eval_s = fwd_s * eval_batch / cfg.federation.batch_size
        mem = memmodel.peak_bytes(model, cfg.method, lora=cfg.task.get("trainable") == "lora",
                                  batch=cfg.federation.batch_size, eval_batch=eval_batch, tokens=tok,
                                  beams=(2 if cfg.task.get("decoding") == "authors" else 1) if task == "squad" else 0,
                                  new_tokens=cfg.task.get("max_new_tokens", 0), frozen_bf16=cfg.task.get("frozen_dtype") == "bfloat16",
                                  feed_every=cfg.curvature.feed == "every", lora_rank=cfg.task.get("lora_rank", 8))
        mkey = (model, cfg.method, cfg.task.get("trainable", "full"))
        if mem["peak"] > peak[mkey][0]["peak"]:
            peak[mkey] = (mem, task)
        stage = "tuning" if plan.is_tuning(config, spec, method, seed) else "reported"
        key = (exp.split("-")[0], model, stage)
        run_h = (steps * step_s + rounds * server_s + evals * eval_s) / 3600
        hours[key] += run_h
        limit = spec.get("resources", {}).get("runtime")  # minutes a cluster job may run
        if limit and 60 * run_h > limit and stage == "reported":
            per_round_s = (steps * step_s + rounds * server_s) / rounds
            over.append({"experiment": exp, "method": method, "rounds": rounds, "predicted h": run_h,
                         "runtime h": limit / 60, "jobs needed": math.ceil(60 * run_h / limit),
                         "jobs allowed (1 + retries)": 1 + int(config.get("retries", 0)),
                         "checkpoint every (rounds)": cfg.run.checkpoint_every,
                         "minutes between checkpoints": cfg.run.checkpoint_every * per_round_s / 60})
        passes = 3 if cfg.method in FIRST_ORDER else (cfg.federation.perturbations + 1)
        fwd_hours[key] += (steps * passes * fwd_s + evals * eval_s) / 3600
        runs[key] += 1
    lines = ["| grid | model | stage | runs | GPU-hours | of them forward passes |", "|---|---|---|---:|---:|---:|"]
    for key in sorted(hours):
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {runs[key]} | {hours[key]:.1f} | {fwd_hours[key]:.1f} |")
    total_runs, total_hours = sum(runs.values()), sum(hours.values())
    lines.append(f"| **all** | | | **{total_runs}** | **{total_hours:.0f}** | **{sum(fwd_hours.values()):.0f}** |")
    consts = ", ".join(f"{k} {v:g}" for k, v in timemodel.constants(dev).items() if k != "name")
    basis = (f"measured forward times and step ratios from {a.measured}" if measured else
             f"the GPU time model (bench/timemodel.py) with the {dev.name} set (--device {a.device}: {consts}; "
             f"bytes/s, entries/s, s, FLOP/s), forward passes counted without the embeddings' look-ups and with the "
             f"head at the last position only, and the dispatch counts of {_shown(a.dispatch, root)}; "
             "replace with --measured bench/gpu_check.py output from the target GPU")
    shown = ("opt-125m", "opt-1.3b", "opt-2.7b")
    ratios = timemodel.ratio_table(dispatch, {m: PARAMS[m] for m in shown}, tokens=32 * TOKENS["sst2"], dev=dev,
                                   flops={m: flops_of(m, 32 * TOKENS["sst2"], 32) for m in shown})
    ratio_md = ratios.to_markdown(index=False, floatfmt=".3g")
    text = (f"Plan of `{a.configfile}`: {total_runs} runs, about {total_hours:.0f} GPU-hours on one GPU per run.\n"
            f"Basis: {basis}; prompt lengths per task are the assumptions in workflows/scripts/plan_budget.py.\n"
            f"Command: `.venv/bin/python workflows/scripts/plan_budget.py --configfile {a.configfile}"
            f"{' --measured ' + a.measured if measured else ''}`\n\n" + "\n".join(lines) + "\n\n"
            "Predicted client step over its P + 1 forward passes (P = 5, forward differences, all parameters "
            f"trainable, a batch of 32 SST-2 prompts of {TOKENS['sst2']} tokens), on the CPU's per-tensor layout and "
            "the flat layout that CUDA runs by default; host_bound: launching the ZO ops takes longer than the "
            "device's work, so the GPU waits for the host.\n\n" + ratio_md + "\n" + _over_md(over) + _memory_md(peak))
    print(text)
    if a.md:
        Path(a.md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.md).write_text(text)


if __name__ == "__main__":
    main()
