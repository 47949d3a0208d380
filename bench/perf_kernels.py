"""The perf suite's in-process parts (bench/perf.py runs them; its docstring says what each measures): step,
bound, replay, profile, chunk and bytes, with the helpers the process parts share (bench/perf_process.py)."""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from hiso.config import load_config
from hiso.curvature import Diagonal, Identity
from hiso.estimators import estimate
from hiso.perturb import Scratch, StepDirections, directions, step_
from hiso.protocol import RoundRecord
from hiso.run import build_federation
from hiso.server import apply_record

MODELS = {
    "tiny-llama": {"model": "tiny-llama", "trainable": "full"},
    "smollm2-lora": {"model": "smollm2-135m-instruct", "trainable": "lora"},
    "smollm2-full": {"model": "smollm2-135m-instruct", "trainable": "full"},
}


def lm_config(name: str, clients: int = 6):
    """The perf suite's LM problem for model `name`: Rotten Tomatoes, 200 training snippets, batches of 16."""
    return load_config(data={"task": {"name": "rotten_tomatoes", "train_size": 200, "dev_size": 20, "test_size": 20,
                                      "max_length": 64, **MODELS[name]},
                             "federation": {"num_clients": clients, "batch_size": 16},
                             "run": {"progress": False}})


def lm_task(name: str, clients: int = 6):
    fed, task = build_federation(lm_config(name, clients))
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


def bench_portable(repeats: int, d: int = 10**7) -> list[dict]:
    """The portable generator (hiso/portable.py) against torch's normal_, per entry, on one CPU thread: one piece
    drawn by each, alternated (native, portable, native, ...), at the tensors layout's 2^18 and at larger pieces."""
    from hiso.portable import Work, normal_
    rows = []
    gen, work = torch.Generator().manual_seed(0), Work()
    for piece in (2**16, 2**18, 2**20, 2**22):
        u = torch.empty(piece)
        reps = max(1, d // piece)
        native, portable = [], []
        for _ in range(repeats):
            native.append(median_time(lambda: [u.normal_(generator=gen) for _ in range(reps)], 1) / (reps * piece))
            portable.append(median_time(lambda: [normal_(u, 12345, 0, work) for _ in range(reps)], 1) / (reps * piece))
        n, p = statistics.median(native), statistics.median(portable)
        rows.append({"piece": piece, "native_ns_per_entry": 1e9 * n, "portable_ns_per_entry": 1e9 * p,
                     "portable_over_native": p / n})
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
