"""The perf suite's parts measured in fresh processes (bench/perf.py runs them; its docstring says what each
measures): memory and clients (one child process per configuration, so no peak carries over) and tier (a
snakemake run of a whole tier in a copy of the workflow).  The children start as
`python -m bench.perf_process memory|clients <json arguments>`."""
from __future__ import annotations

import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hiso.curvature import Diagonal, Identity
from hiso.estimators import estimate
from hiso.perturb import Scratch, StepDirections, step_
from hiso.protocol import RoundRecord
from hiso.server import apply_record

from .perf_kernels import lm_config, lm_task

ROOT = Path(__file__).resolve().parents[1]


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
    from hiso.config import task_options
    task_cls, opts = task_options(lm_config(name))  # the task alone: no server copy of the model
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
                out = subprocess.run([sys.executable, "-m", "bench.perf_process", "memory", json.dumps([name, method, steps, cache])],
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
        out = subprocess.run([sys.executable, "-m", "bench.perf_process", "clients", json.dumps([m, rounds])],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["rss_vs_2_clients"] = r["peak_rss_MB"] / base["peak_rss_MB"]
    return rows



def bench_tier(tier: str, cores: int, keep: str | None = None) -> list[dict]:
    """The tier's snakemake run in a copy of the working tree (every file git tracks or would track, and .git, so
    its pages name the commit; the repository's .snakemake and results stay untouched), then the same command
    again (nothing to do).  `keep`: the first run's results folder is moved there (replacing it), so the
    measured run's pages can be published."""
    import shutil
    import tempfile

    from hiso.gitinfo import git
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        files = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT).split("\0")
        for f in filter(None, files):
            if (ROOT / f).is_file():
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, repo / f)
        shutil.copytree(ROOT / ".git", repo / ".git")
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
        if keep:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(f"{tmp}/out", keep)
    jobs = [int(m[-1]) if (m := re.findall(r"^total\s+(\d+)", log, re.M)) else 0 for log in logs]
    row = {"tier": tier, "cores": cores, "jobs": jobs[0], "wall_min": times[0] / 60, "rerun_jobs": jobs[1],
           "rerun_s": times[1]}
    print(row, flush=True)
    return [row]



if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    child = {"memory": _memory_child, "clients": _clients_child}[sys.argv[1]]
    print(json.dumps(child(*json.loads(sys.argv[2]))))
