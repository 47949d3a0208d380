"""Performance against physical limits.  Every number is a ratio measured side by side in one
process (median of --repeats), because these machines are noisy.

  step      client step time / ((P+1) * T_fwd), HiSo and DeComFL, P = 1 and 5, forward difference, with and
            without cached directions; T_fwd measured on the same batch in the same process.
  memory    one client's peak RSS during HiSo / DeComFL local steps and catch-up replay minus the peak of one
            plain forward pass (both above the loaded model, from a reset of the kernel's peak-RSS counter),
            in units of the fp32 trainable bytes; each configuration in a fresh subprocess.
  clients   peak RSS and seconds per round with 2, 10, 100 clients (2 sampled), tiny LM full-parameter.
  replay    seconds per replayed round (apply_record: P directions regenerated, no forward pass) over the time
            to regenerate P directions of size d.
  bound     what bounds a client step: T_fwd, T_draw (one N(0, I_d) draw over all trainable tensors, in
            pieces) and T_axpy (one x += a z pass), interleaved; the floor ratio of a forward-difference step,
            ((P+1) T_fwd + k P (T_draw + T_axpy)) / ((P+1) T_fwd), for k = 1 (each direction drawn once: the
            least any Gaussian ZO step can do) and k = 2 (perturb + regenerate-to-restore, a tau = 1 client).
  profile   torch.profiler over HiSo and DeComFL catch-up replays (d = 10M, P = 5): CPU time per aten op, i.e.
            where a replay's time goes beyond regenerating the directions.
  chunk     seconds of one HiSo replay (apply_record) and of one forward-difference perturb/restore pass on a
            10M-entry tensor with directions drawn in pieces of 2^14 .. 2^22 entries, over whole-tensor draws
            (the piece size bounds the scratch memory; it must not cost time).
  bytes     measured bytes per round per method over the minimum (scalar-only: tau*P*4 up + 4*tau seeds
            down; vector methods: 4*d each way).

  tier      wall time of a workflow tier (default: the embedded CPU default, `make run`) in a fresh copy of the
            workflow with a fresh results folder on --cores cores, as a clean clone's first run (set-up excluded),
            and of the no-op rerun that follows.
  flower    bytes at every layer (payload, protocol messages, Flower messages, TCP) and time per round on a Flower
            deployment on 127.0.0.1, per problem and method (bench/flower_bytes.py); --rounds rounds each.
  warm      wall time of small runs started cold (a fresh `python -m hiso run`) over warm (forked from the
            workflow's warm runner), alternated (bench/warm_runner.py).

The workflow's perf tier runs each part as a job and writes the results page (workflows/config/perf.yaml):
    snakemake --cores all --configfile workflows/config/perf.yaml
By hand, one part at a time:
    python -m bench.perf --only bytes --csv bytes.csv --meta bytes.json
    python -m bench.perf --only step --models tiny-llama --P 5 --repeats 5
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import warm_runner  # noqa: E402
from hiso.config import load_config  # noqa: E402
from hiso.curvature import Diagonal, Identity  # noqa: E402
from hiso.estimators import estimate  # noqa: E402
from hiso.federation import apply_record  # noqa: E402
from hiso.gitinfo import commit  # noqa: E402
from hiso.io import atomic_write  # noqa: E402
from hiso.perturb import Scratch, StepDirections, directions, step_  # noqa: E402
from hiso.protocol import RoundRecord  # noqa: E402
from hiso.run import build_federation  # noqa: E402

PARTS = ("step", "bound", "memory", "clients", "replay", "profile", "chunk", "bytes", "warm", "tier", "flower")
MODELS = {
    "tiny-llama": {"model": "tiny-llama", "trainable": "full"},
    "smollm2-lora": {"model": "smollm2-135m-instruct", "trainable": "lora"},
    "smollm2-full": {"model": "smollm2-135m-instruct", "trainable": "full"},
}


def lm_task(name: str, clients: int = 6):
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "train_size": 200, "dev_size": 20, "test_size": 20,
                                     "max_length": 64, **MODELS[name]},
                            "federation": {"num_clients": clients, "batch_size": 16},
                            "run": {"progress": False}})
    fed, task = build_federation(cfg)
    return fed, task


def lm_setup(name: str):
    """The task of model `name`, its trainable tensors, one batch of 16 and d."""
    _, task = lm_task(name)
    params = task.params()
    return task, params, task.batch(0, np.random.default_rng(0), 16), sum(p.numel() for p in params)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_step(models: list[str], repeats: int, perturbations=(1, 5)) -> list[dict]:
    """Forward passes and client steps are timed alternately (fwd, step, fwd, step, ...) so that a change in
    machine load hits both; the ratio is median(step) / ((P+1) * median(fwd))."""
    rows = []
    for name in models:
        task, params, batch, d = lm_setup(name)
        scratch = Scratch(params)
        for kind, cls in (("decomfl", Identity), ("hiso", Diagonal)):
            curv = cls().bind(params)
            for P in perturbations:
                for cache in (False, True):
                    def client_step():
                        t0 = time.perf_counter()
                        dirs = StepDirections(1234, P, params, curv, scratch, cache)
                        est = estimate(params, lambda: task.loss(batch), dirs, 1e-3, "forward")
                        t1 = time.perf_counter()
                        step_(params, dirs, est.scalars / np.float32(P), 0.0)  # lr 0: timing without drift
                        return t1 - t0, time.perf_counter() - t0
                    client_step()  # warm-up
                    fwd, est_t, step = [], [], []
                    for _ in range(repeats):
                        fwd.append(median_time(lambda: task.loss(batch), 1))
                        a, b = client_step()
                        est_t.append(a)
                        step.append(b)
                    t, te, t_fwd = statistics.median(step), statistics.median(est_t), statistics.median(fwd)
                    # tau = 1: a client only estimates (its update is discarded with the round; the server's
                    # replay applies the aggregate); tau > 1: every local step but the last also updates
                    rows.append({"model": name, "d": d, "method": kind, "P": P, "cache_directions": cache,
                                 "fwd_s": t_fwd, "estimate_s": te, "step_s": t,
                                 "ratio_tau1": te / ((P + 1) * t_fwd), "ratio": t / ((P + 1) * t_fwd)})
                    print(rows[-1], flush=True)
    return rows


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs) and
    return the current RSS in kB; the next VmHWM read is the peak since this call."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _memory_child(name: str, method: str, steps: int, cache: bool) -> dict:
    """One client's memory above the loaded model.  Two windows, each from a reset of the peak RSS:
    (a) one plain forward pass (the activations), (b) `steps` local steps + catch-up replays (curvature
    state, scratch pieces, cached directions, and the forward passes' activations again).  What the method
    adds is (b) - (a); reported in units of the fp32 trainable bytes."""
    torch.set_num_threads(1)
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "train_size": 200, "dev_size": 20,
                                     "test_size": 20, "max_length": 64, **MODELS[name]},
                            "run": {"progress": False}})
    from hiso.config import task_options
    task_cls, opts = task_options(cfg)
    task = task_cls(opts, num_clients=6, seed=0)
    batch = task.batch(0, np.random.default_rng(0), 16)
    task.loss(batch)  # warm-up: allocator pools and lazy buffers
    base = _reset_peak()
    task.loss(batch)
    act = _status_kb("VmHWM") - base
    base = _reset_peak()
    params = task.params()
    curv = (Diagonal if method == "hiso" else Identity)().bind(params)
    scratch = Scratch(params)
    P = 5
    for k in range(steps):
        dirs = StepDirections(100 + k, P, params, curv, scratch, cache)
        est = estimate(params, lambda: task.loss(batch), dirs, 1e-3, "forward")
        step_(params, dirs, est.scalars / np.float32(P), 1e-6)
        rec = RoundRecord(k, np.array([200 + k], np.uint32), est.scalars[None, :], np.zeros(0, np.float32), 2)
        apply_record(params, curv, rec, 1e-6, scratch)  # catch-up replay (with the curvature update)
    peak = _status_kb("VmHWM") - base
    trainable = sum(p.numel() for p in params) * 4
    largest = max(p.numel() for p in params) * 4
    return {"model": name, "method": method, "cache_directions": cache, "trainable_MB": trainable / 2**20,
            "largest_tensor_MB": largest / 2**20, "forward_peak_MB": act / 1024, "steps_peak_MB": peak / 1024,
            "added_MB": (peak - act) / 1024, "added_vs_trainable": (peak - act) * 1024 / trainable}


def bench_memory(models: list[str], steps: int) -> list[dict]:
    rows = []
    for name in models:
        for method in ("decomfl", "hiso"):
            for cache in (False, True):
                out = subprocess.run([sys.executable, "-m", "bench.perf", "--child-memory", json.dumps([name, method, steps, cache])],
                                     capture_output=True, text=True, check=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    return rows


def _clients_child(clients: int, rounds: int) -> dict:
    torch.set_num_threads(1)
    fed, task = lm_task("tiny-llama", clients)
    fed.run_round()
    t0 = time.perf_counter()
    for _ in range(rounds):
        fed.run_round()
    return {"clients": clients, "sampled": 2, "s_per_round": (time.perf_counter() - t0) / rounds,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_clients(rounds: int) -> list[dict]:
    rows = []
    for m in (2, 10, 100):
        out = subprocess.run([sys.executable, "-m", "bench.perf", "--child-clients", json.dumps([m, rounds])],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["rss_vs_2_clients"] = r["peak_rss_MB"] / base["peak_rss_MB"]
    return rows


def bench_replay(repeats: int, dims=(10**6, 10**7)) -> list[dict]:
    rows = []
    for d in dims:
        shapes = [(d // 4,)] * 4
        params = [torch.zeros(s) for s in shapes]
        scratch = Scratch(params)
        for kind, cls in (("decomfl", Identity), ("hiso", Diagonal)):
            curv = cls().bind(params)
            P = 5
            rec = RoundRecord(0, np.array([7], np.uint32), np.ones((1, P), np.float32), np.zeros(0, np.float32), 2)

            def regenerate():
                for j in range(P):
                    for _ in directions(7, j, params, Identity().bind(params), scratch):
                        pass

            t_gen = median_time(regenerate, repeats)
            t_rep = median_time(lambda: apply_record(params, curv, rec, 1e-9, scratch), repeats)
            rows.append({"d": d, "method": kind, "P": P, "replay_s": t_rep, "regen_s": t_gen, "ratio": t_rep / t_gen})
            print(rows[-1], flush=True)
    return rows


def bench_bound(models: list[str], repeats: int) -> list[dict]:
    from hiso.perturb import perturb_
    rows = []
    for name in models:
        task, params, batch, d = lm_setup(name)
        curv, scratch = Identity().bind(params), Scratch(params)
        fwd, draw, axpy = [], [], []
        for r in range(repeats):
            fwd.append(median_time(lambda: task.loss(batch), 1))
            draw.append(median_time(lambda: [None for _ in directions(r, 0, params, curv, scratch)], 1))
            zs = StepDirections(r, 1, params, curv, scratch, cache=True)
            list(zs(0))  # cached pieces: the timed pass below is the axpy alone
            axpy.append(median_time(lambda: perturb_(params, zs(0), 0.0), 1))
        t_fwd, t_draw, t_axpy = (statistics.median(x) for x in (fwd, draw, axpy))
        row = {"model": name, "d": d, "fwd_s": t_fwd, "draw_s": t_draw, "axpy_s": t_axpy,
               "normals_per_s": d / t_draw}
        for P in (1, 5):
            for k in (1, 2):
                row[f"floor_P{P}_k{k}"] = 1 + k * P * (t_draw + t_axpy) / ((P + 1) * t_fwd)
        rows.append(row)
        print(row, flush=True)
    return rows


def bench_profile(repeats: int, d: int = 10**7) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile
    params = [torch.zeros(d // 4) for _ in range(4)]
    scratch, P, rows = Scratch(params), 5, []
    rec = RoundRecord(0, np.array([7], np.uint32), np.ones((1, P), np.float32), np.zeros(0, np.float32), 2)
    for kind, cls in (("decomfl", Identity), ("hiso", Diagonal)):
        curv = cls().bind(params)
        apply_record(params, curv, rec, 1e-9, scratch)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                apply_record(params, curv, rec, 1e-9, scratch)
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
            rows.append({"method": kind, "op": e.key, "calls_per_replay": e.count / repeats,
                         "self_ms_per_replay": e.self_cpu_time_total / 1e3 / repeats,
                         "share": e.self_cpu_time_total / total})
            print(rows[-1], flush=True)
    return rows


def bench_chunk(repeats: int, d: int = 10**7) -> list[dict]:
    """Piece size vs whole-tensor draws, interleaved (whole, 2^14, ..., whole, 2^14, ...) so load hits all."""
    from hiso.perturb import perturb_
    params = [torch.zeros(d)]
    curv = Diagonal().bind(params)
    curv.state[0].uniform_(0.5, 2.0)
    P = 5
    rec = RoundRecord(0, np.array([7], np.uint32), np.ones((1, P), np.float32), np.zeros(0, np.float32), 2)
    sizes = {"whole": 16 * (d // 16 + 1), **{f"2^{k}": 2**k for k in (14, 16, 18, 20, 22)}}
    times = {name: {"replay": [], "perturb": []} for name in sizes}
    for _ in range(repeats):
        for name, chunk in sizes.items():
            scratch = Scratch(params, chunk=chunk)
            dirs = StepDirections(3, P, params, curv, scratch)
            times[name]["perturb"].append(median_time(lambda: (perturb_(params, dirs(0), 1e-3),
                                                               perturb_(params, dirs(0), -1e-3)), 1))
            times[name]["replay"].append(median_time(lambda: apply_record(params, curv, rec, 1e-9, scratch), 1))
    rows = []
    base = {k: statistics.median(v) for k, v in times["whole"].items()}
    for name, chunk in sizes.items():
        t = {k: statistics.median(v) for k, v in times[name].items()}
        rows.append({"d": d, "piece": name, "scratch_MB": 2 * min(chunk, d) * 4 / 2**20,
                     "replay_s": t["replay"], "replay_vs_whole": t["replay"] / base["replay"],
                     "perturb_restore_s": t["perturb"], "perturb_vs_whole": t["perturb"] / base["perturb"]})
        print(rows[-1], flush=True)
    return rows


def bench_bytes() -> list[dict]:
    rows = []
    d, P, tau = 10_000, 5, 1
    for method in ("decomfl", "hiso", "fedkseed", "fedzo", "fedavg", "fedadam"):
        cfg = load_config(data={"method": method, "task": {"name": "quadratic", "dim": d},
                                "federation": {"perturbations": P, "local_steps": tau, "lr": 1e-3},
                                "run": {"progress": False}})
        fed, _ = build_federation(cfg)
        fed.run_round()  # round 1: nobody has anything to catch up on
        row = fed.run_round()
        m = cfg.federation.clients_per_round
        scalar_only = method in ("decomfl", "hiso", "fedkseed")
        min_up = m * (tau * P * 4 if scalar_only else 4 * d)
        min_down = m * (4 * tau if scalar_only else 4 * d)
        rows.append({"method": method, "d": d, "bytes_up": row["bytes_up"], "min_up": min_up,
                     "up_ratio": row["bytes_up"] / min_up, "bytes_down": row["bytes_down"], "min_down": min_down,
                     "down_ratio": row["bytes_down"] / min_down})
        print(rows[-1], flush=True)
    return rows


def bench_tier(tier: str, cores: int) -> list[dict]:
    """The tier's snakemake run in a copy of the workflow (so the repository's .snakemake and results stay
    untouched), then the same command again (nothing to do)."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        shutil.copy2(ROOT / "Snakefile", repo)
        for d in ("workflows", "figures", "paper_results", "hiso", "baselines", "bench", "docs"):
            shutil.copytree(ROOT / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile",
               f"workflows/config/{tier}.yaml", "--config", f"results={tmp}/out"]
        times, logs = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            logs.append(p.stdout + p.stderr)
            if p.returncode:
                raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}:\n{logs[-1][-3000:]}")
    jobs = [int(m[-1]) if (m := re.findall(r"^total\s+(\d+)", log, re.M)) else 0 for log in logs]
    row = {"tier": tier, "cores": cores, "jobs": jobs[0], "wall_min": times[0] / 60, "rerun_jobs": jobs[1],
           "rerun_s": times[1]}
    print(row, flush=True)
    return [row]


def bench_flower(rounds: int) -> list[dict]:
    from bench import flower_bytes  # imports flwr: only for this part
    return flower_bytes.measure_all(rounds)


def machine() -> dict:
    """What a timing depends on: the CPU, how many, torch and its threads, and the load average (1 min)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return {"cpu": model, "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="step,bound,memory,clients,replay,profile,chunk,bytes,warm,tier,flower",
                    help="the parts to run, comma-separated")
    ap.add_argument("--models", default="tiny-llama,smollm2-lora", help=f"of {', '.join(MODELS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--P", default="1,5", help="perturbation counts of the step bench")
    ap.add_argument("--rounds", type=int, default=5, help="the flower part's rounds per deployment")
    ap.add_argument("--tier", default="default", help="the tier the tier part runs (workflows/config/<tier>.yaml)")
    ap.add_argument("--cores", type=int, default=2, help="the tier part's snakemake --cores")
    ap.add_argument("--out", default=None, help="write <out>_<part>.csv")
    ap.add_argument("--csv", default=None, help="the one part's rows (with a single --only part)")
    ap.add_argument("--meta", default=None, help="a JSON of the part, its arguments, the machine, load and wall time")
    ap.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-clients", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child_memory:
        print(json.dumps(_memory_child(*json.loads(args.child_memory))))
        return
    if args.child_clients:
        print(json.dumps(_clients_child(*json.loads(args.child_clients))))
        return
    import logging
    logging.disable(logging.WARNING)
    models, only = args.models.split(","), args.only.split(",")
    unknown = [m for m in models if m not in MODELS] + [p for p in only if p not in PARTS]
    if unknown or ((args.csv or args.meta) and len(only) != 1):
        ap.error(f"unknown models or parts {unknown}" if unknown else "--csv and --meta take a single --only part")
    P = [int(p) for p in args.P.split(",")]
    parts = {"step": lambda: bench_step(models, args.repeats, P), "memory": lambda: bench_memory(models, 2),
             "clients": lambda: bench_clients(5), "replay": lambda: bench_replay(args.repeats),
             "chunk": lambda: bench_chunk(args.repeats), "profile": lambda: bench_profile(args.repeats),
             "bound": lambda: bench_bound(models, args.repeats), "bytes": bench_bytes,
             "warm": lambda: warm_runner.measure(args.repeats), "tier": lambda: bench_tier(args.tier, args.cores),
             "flower": lambda: bench_flower(args.rounds)}
    for part in only:
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        df = pd.DataFrame(parts[part]())
        meta = {"part": part, "models": models if part in ("step", "memory", "bound") else None,
                "repeats": args.repeats, "P": P if part == "step" else None,
                **({"tier": args.tier, "cores": args.cores} if part == "tier" else {}),
                **({"rounds": args.rounds} if part == "flower" else {}), **machine(),
                "load_before": load0, "load_after": os.getloadavg()[0], "wall_s": time.perf_counter() - t0,
                "commit": commit(ROOT)}
        print(f"\n## {part}\n")
        print(df.to_markdown(index=False, floatfmt=".3g"))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(f"{args.out}_{part}.csv", index=False)
        if args.csv:
            atomic_write(args.csv, df.to_csv(index=False))
        if args.meta:
            atomic_write(args.meta, json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
