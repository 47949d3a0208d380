"""The simulator's runner: a validated config in, per-round metrics (CSV) and provenance (run.json) out.
Callers use hiso.run.run, which also starts a Flower deployment (federation.engine: flower) around this runner.

Outputs in `out_dir`, all written atomically (temp file + rename):
    metrics.csv     (when the run has ended; metrics.partial.csv meanwhile, at each checkpoint)
                    one row per round: round, train_loss, eval metrics when evaluated, bytes_up,
                    bytes_up_scalars, bytes_down, bytes_down_seeds, bytes_down_catchup, forward_passes,
                    rejected, accepted, wall_seconds and cpu_seconds (wall and process CPU time of that round,
                    evaluation included)
    run.json        config, config hash, git SHA, package versions, hardware, status, message
    checkpoint.pt   server model + curvature + round log + client log positions, every N rounds

A run restarted with the same command resumes from its checkpoint and ends with identical metrics (all
randomness is derived from (seed, round, client), so there is no hidden RNG state to lose).
Status: "running", "complete", "diverged" (non-finite loss or model) or "failed" (e.g. curvature error).
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from . import numerics
from .config import Config, task_options
from .curvature import CurvatureError
from .federation import Federation
from .io import atomic_write
from .resume import (  # noqa: F401  (extends and state_nbytes: the runner's API, re-exported)
    FINAL,
    SHORTER,
    _check_space,
    _identity,
    _prior,
    _same_numerics,
    _same_stream,
    _set_aside,
    extends,
    state_nbytes,
)
from .rundir import RunDir

log = logging.getLogger("hiso.run")  # the runner's log, whichever engine

STALL_ROUNDS = 10  # consecutive rounds in which every upload was rejected -> the run has diverged


class RunFailed(RuntimeError):
    """The run stopped with status diverged or failed; run.json says why."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def provenance() -> dict:
    """Git SHA, package versions and hardware of this process."""
    from .gitinfo import git
    versions = {}
    for pkg in ("torch", "numpy", "pandas", "scikit-learn", "transformers", "peft", "datasets"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    from .hub import mirror, read_lock
    root = mirror()
    hub = {"mirror": str(root), **read_lock(root)} if root else None  # None: the hub's own cache
    kernels = numerics.state()
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "python": sys.version.split()[0], "packages": versions, "hub_mirror": hub,
            # "warm": forked from hiso.warm's server (a workflow's local jobs), "cold": its own interpreter
            "runner": "warm" if os.environ.get("HISO_WARM_CHILD") else "cold",
            "hardware": {"machine": platform.machine(), "processor": kernels["cpu"]["model"], "cpus": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(),
                         # only a process that already uses CUDA asks it for a name (a probe before a fork would
                         # cost every forked child its CUDA); a GPU run's device name is also in its stream
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_initialized() else None},
            # the CPU kernels that decided the run's bits, and whether they are the same on any x86-64 CPU
            "numerics": kernels, **backend_state()}


def backend_state() -> dict:
    """The matmul precision and determinism this process runs with (text tasks set them from task.matmul_precision
    and task.deterministic; the default is strict fp32, no TF32)."""
    cuda = torch.cuda.is_initialized()
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = algorithms and torch.is_deterministic_algorithms_warn_only_enabled()
    return {"precision": {"float32_matmul": torch.get_float32_matmul_precision(),
                          "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                          "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32},
            "determinism": {"deterministic_algorithms": "warn-only" if warn_only else algorithms,
                            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                            # CPU runs repeat bit for bit (tested); on CUDA, deterministic algorithms with a
                            # fixed workspace repeat on the same GPU model and software unless torch warned of
                            # an op without a deterministic kernel, which the suite does not verify
                            "bit_reproducible": not cuda}}


def build_federation(cfg: Config):
    """(method object, task) for a validated config: the task is built first, then the registered method."""
    from .config import method_options

    task_cls, opts = task_options(cfg)
    task = task_cls(opts, num_clients=cfg.federation.num_clients, seed=cfg.seed)
    if cfg.run.init_ulps:  # a rounding twin: the same run from an initial model a last bit away (hiso/noise.py)
        from .noise import nudge_ulps
        nudge_ulps(task.params(), cfg.run.init_ulps)
    spec, mopts = method_options(cfg)
    return spec.build(cfg, task, mopts), task


@dataclass
class RunResult:
    status: str
    metrics: pd.DataFrame
    out_dir: Path | None
    federation: Federation | None = None
    initial_eval: dict | None = None


def _drop_off_cadence_eval(row: dict, eval_keys, eval_every: int) -> None:
    """An extended run's last row was evaluated because it was the last round; the longer run evaluates it only
    on its cadence."""
    if row["round"] % eval_every:
        for key in eval_keys:
            row.pop(key, None)


def evaluate(task, cfg: Config) -> dict:
    """One evaluation of the server model: the run's eval_split, and with run.also_dev the dev split beside it
    (its keys prefixed dev_: dev_loss, dev_accuracy, ...)."""
    ev = task.evaluate(cfg.run.eval_split)
    if cfg.run.also_dev:
        ev.update({"dev_" + k.removeprefix("test_"): v for k, v in task.evaluate("dev").items()})
    return ev


def stop_reason(rows: list[dict], metric: str, higher: bool, target: float | None, patience: int) -> str | None:
    """Why the run should end now (target reached, or `patience` evaluations without a new best), from the rows
    alone, so that a resumed run stops where the uninterrupted one does."""
    values = [row[metric] for row in rows if metric in row and row[metric] == row[metric]]
    if not values:
        return None
    last = values[-1]
    if target is not None and (last >= target if higher else last <= target):
        return f"{metric} {last:.4g} reached run.stop_target {target:g}"
    if patience and len(values) > patience:
        best_before = max(values[:-patience]) if higher else min(values[:-patience])
        recent = values[-patience:]
        tol = 1e-6 * abs(best_before)  # a new best must beat the old one by more than 1e-6 relative
        if not any((v > best_before + tol) if higher else (v < best_before - tol) for v in recent):
            return f"no new best {metric} in {patience} evaluations (run.stop_patience)"
    return None


def exploded(loss: float, first_loss: float, factor: float) -> bool:
    """The divergence rule for a finite loss: above `factor` x the first round's loss (factor 0: off)."""
    return bool(factor) and loss > factor * max(abs(first_loss), 1e-12)


def _finite_model(fed) -> bool:
    """One device reduction over every tensor and one host sync (not one per tensor)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in fed.global_params()]).all())


def _segment(old_segments: list, from_round: int, p: dict) -> list:
    """run.json's provenance per process that worked on the run (`p`: this process's provenance()); warns when
    the code changed since the last."""
    seg = {"git_sha": p["git_sha"], "git_dirty": p["git_dirty"], "packages": p["packages"],
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_round": from_round}
    if old_segments:
        last = old_segments[-1]
        if (last.get("git_sha"), last.get("packages")) != (seg["git_sha"], seg["packages"]):
            log.warning("resuming at round %d under other code (git %s -> %s); run.json records both segments",
                        from_round, str(last.get("git_sha"))[:10], str(seg["git_sha"])[:10])
    return [*old_segments, seg]


def run(cfg: Config, out_dir: str | Path | None = None, *, replace_different: bool = False, restart: bool = False,
        stop_after: int | None = None, federation_hook=None, deployed: bool = False,
        on_evaluate=None, continue_stopped: bool = False, wait_lock: bool = False) -> RunResult:
    """Run (or resume) one configuration and return its metrics.

    The folder's writer lock is taken first (RunDirError: held by another run, or unwritable).  A folder
    holding a run of another config is refused, unless `replace_different` (the workflow's choice when a config
    changed): then its files are replaced.  `restart` discards the folder's state and starts at round 0.  A
    finished run (complete, diverged or failed) is final: rerunning it changes nothing and returns (or
    raises) its status.  `stop_after` ends the loop after that many rounds as if the process were killed
    (tests); `federation_hook(fed)` lets tests inject faults; `on_evaluate(fed, task, row)` is called after each
    evaluation (studies: diagnostics of the learned H, their own stop rules) and stops the run (complete,
    `stopped` in run.json) when it returns a reason.  `deployed` marks the call inside a Flower ServerApp
    (hiso/flower/app.py), which runs this same loop with the clients in SuperNodes; without it a flower config
    is refused here: hiso.run.run starts the deployment first.  `continue_stopped` continues a run that a stop
    rule ended (`stopped` in run.json) from its final checkpoint to the budget: exactly the run never stopped.
    """
    if cfg.federation.engine == "flower" and not deployed:
        raise ValueError("federation.engine: flower runs through hiso.run.run, which starts the SuperNodes")
    numerics.apply_torch(cfg.run.threads)  # oneDNN off for portable convolutions; the thread count
    rundir = RunDir(out_dir) if out_dir is not None else None
    if rundir is None:
        return _run(cfg, None, {}, stop_after, federation_hook, on_evaluate)
    fresh = not rundir.path.exists()
    rundir.lock(wait=wait_lock)
    try:
        if restart:
            rundir.clear()
        old = _prior(cfg, rundir, replace_different, continue_stopped)
        if old.get("status") in FINAL:
            metrics = pd.read_csv(rundir.path / "metrics.csv")
            if old["status"] != "complete":
                raise RunFailed(old["status"], old.get("message", ""))
            return RunResult("complete", metrics, rundir.path, None, old.get("initial_eval"))
        return _run(cfg, rundir, old, stop_after, federation_hook, on_evaluate)
    finally:
        rundir.unlock()
        if fresh:  # refused (or failed) before writing anything: leave no folder and no .lock behind
            rundir.remove_if_empty()


def _run(cfg: Config, rundir: RunDir | None, old: dict, stop_after, federation_hook, on_evaluate=None) -> RunResult:
    out = rundir.path if rundir is not None else None
    rows: list[dict] = []
    fed, task = build_federation(cfg)  # first: a text task sets the precision and determinism provenance records
    info = {"name": cfg.name, "config": cfg.to_dict(), "config_hash": cfg.hash(), **provenance()}
    if federation_hook is not None:
        federation_hook(fed)
    info.update(metric=task.metric, higher_is_better=task.higher_is_better)  # the task's own direction
    stream = getattr(fed, "stream", None)  # methods that draw directions from the round log's seeds
    if stream is not None:
        info["stream"] = stream
    if out is not None:
        _check_space(out, fed)
    if old:
        _same_stream(out, old.get("stream"), stream, "run.json")
        _same_numerics(out, old.get("numerics"), info["numerics"])
        state = rundir.load_checkpoint()
        if state is not None:
            _same_stream(out, state.get("stream"), stream, "checkpoint.pt")
            fed.load_state_dict(state["federation"])
            rows = state["rows"]
            if old.get("extended_from") and rows:
                _drop_off_cadence_eval(rows[-1], old.get("initial_eval") or {}, cfg.run.eval_every)
    if not rows:  # the starting point (zero-shot for a pretrained LM): what every curve is compared against
        fed.load_server_model()
        info["initial_eval"] = evaluate(task, cfg)
    else:  # resumed: measured by the first process
        info["initial_eval"] = old.get("initial_eval")
    if out is not None:
        if old.get(SHORTER):  # every check passed: the finished shorter run steps aside (restorable)
            _set_aside(rundir, old[SHORTER])
        finished = rows and fed.rounds_done >= cfg.federation.rounds  # reopened with nothing left to compute
        segs = old.get("segments", []) if rows else []
        info["segments"] = segs if finished else _segment(segs, fed.rounds_done, info)
        info["status"] = "running"
        atomic_write(out / "run.json", json.dumps(info, indent=2))

    def save(status: str, message: str = "", checkpoint: bool = True):
        if out is None:
            return
        final = status != "running"
        if checkpoint and not (final and not cfg.run.keep_checkpoint):  # no final checkpoint when none is kept
            rundir.save_checkpoint({"federation": fed.state_dict(), "rows": rows, "stream": stream})
        # metrics.csv appears only when the run has ended (the workflow's output); metrics.partial.csv
        # shows progress meanwhile
        atomic_write(out / ("metrics.csv" if final else "metrics.partial.csv"), pd.DataFrame(rows).to_csv(index=False))
        if final:
            (out / "metrics.partial.csv").unlink(missing_ok=True)
            (out / "metrics.shorter.csv").unlink(missing_ok=True)  # the longer run has replaced the shorter one
            (out / "run.shorter.json").unlink(missing_ok=True)
        info.update(status=status, message=message, rounds_done=fed.rounds_done)
        atomic_write(out / "run.json", json.dumps(info, indent=2))
        if final:  # the final checkpoint is written and the run is over: the previous one guards nothing now
            rundir.retire_checkpoints(keep_final=cfg.run.keep_checkpoint)
    total = cfg.federation.rounds
    bar = None
    if cfg.run.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=fed.rounds_done, desc=cfg.name, unit="round", leave=False, disable=None)
    status, message = "complete", ""
    stalled, stopped = 0, None
    saved_at = time.monotonic()  # run.checkpoint_minutes: a wall-clock cadence for long GPU rounds
    try:
        while fed.rounds_done < total:
            if stop_after is not None and fed.rounds_done >= stop_after:
                return RunResult("interrupted", pd.DataFrame(rows), out, fed)
            t0, c0 = time.perf_counter(), time.process_time()
            row = fed.run_round()
            r = row["round"]
            if r % cfg.run.eval_every == 0 or r == total:
                fed.load_server_model()
                ev = evaluate(task, cfg)
                row.update(ev)
                # one line per evaluation in the run's log (INFO on logger hiso.run; the CLI shows it)
                log.info("%s round %d/%d: train_loss %.4g, %s", cfg.name, r, total, row["train_loss"],
                         ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
            row["wall_seconds"] = time.perf_counter() - t0
            row["cpu_seconds"] = time.process_time() - c0  # this process's CPU time: what sharing cannot inflate
            rows.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.4g}")
            # a round in which no client answered (a deployment's dropped clients) measured no loss: NaN without
            # any forward pass is not divergence (consecutive rounds without an accepted upload stop the run below)
            measured = row.get("forward_passes", 1) > 0
            if (measured and not math.isfinite(row["train_loss"])) or not _finite_model(fed):
                status = "diverged"
                message = (f"round {r}: training loss {row['train_loss']} / model finite: {_finite_model(fed)}; "
                           f"the run diverged (lower federation.lr or federation.mu)")
                break
            first = next((x["train_loss"] for x in rows if math.isfinite(x["train_loss"])), row["train_loss"])
            if measured and exploded(row["train_loss"], first, cfg.run.diverge_factor):
                status = "diverged"
                message = (f"round {r}: training loss {row['train_loss']:.4g} exceeds run.diverge_factor "
                           f"({cfg.run.diverge_factor:g}) x the first round's {first:.4g}; "
                           "the run diverged (lower federation.lr)")
                break
            stalled = stalled + 1 if row.get("accepted", 1) == 0 else 0
            if stalled >= STALL_ROUNDS:
                status = "diverged"
                message = (f"round {r}: every upload was rejected for {STALL_ROUNDS} consecutive rounds (last reason: "
                           f"{fed.last_rejection()}); the model no longer "
                           "moves (lower federation.lr, or raise federation.max_abs_scalar if the scalars are genuine)")
                break
            if task.metric in row:
                why = stop_reason(rows, task.metric, task.higher_is_better, cfg.run.stop_target,
                                  cfg.run.stop_patience) or (on_evaluate and on_evaluate(fed, task, row))
                if why:
                    stopped = f"round {r}: {why}"
                    break
            every = cfg.run.checkpoint_every and r % cfg.run.checkpoint_every == 0
            late = cfg.run.checkpoint_minutes and time.monotonic() - saved_at >= 60 * cfg.run.checkpoint_minutes
            if (every or late) and r < total:
                save("running")
                saved_at = time.monotonic()
    except CurvatureError as e:
        status, message = "failed", str(e)
    finally:
        if bar is not None:
            bar.close()
    if stopped:
        info["stopped"] = stopped  # complete, before the budget: a longer budget would stop here too
    save(status, message, checkpoint=True)
    if status != "complete":
        raise RunFailed(status, message)
    return RunResult(status, pd.DataFrame(rows), out, fed, info.get("initial_eval"))
