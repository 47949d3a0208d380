"""The simulator's runner: a validated config in, per-round metrics (CSV) and provenance (run.json) out.
Callers use hiso.run.run, which also starts a Flower deployment (federation.engine: flower) around this runner.

Outputs in `out_dir`, all written atomically (temp file + rename):
    metrics.csv     (when the run has ended; metrics.partial.csv meanwhile, at each checkpoint)
                    one row per round: round, train_loss, eval metrics when evaluated, bytes_up,
                    bytes_up_scalars, bytes_down, bytes_down_seeds, bytes_down_catchup, forward_passes,
                    rejected, accepted, wall_seconds (seconds of that round, evaluation included)
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
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from . import numerics
from .config import NOT_COMPUTED, Config, canonical, task_options
from .curvature import CurvatureError
from .federation import Federation
from .io import atomic_write
from .rundir import RunDir, RunDirError

log = logging.getLogger("hiso.run")  # the runner's log, whichever engine
FINAL = ("complete", "diverged", "failed")

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
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "python": sys.version.split()[0], "packages": versions, "hub_mirror": hub,
            # "warm": forked from hiso.warm's server (a workflow's local jobs), "cold": its own interpreter
            "runner": "warm" if os.environ.get("HISO_WARM_CHILD") else "cold",
            "hardware": {"machine": platform.machine(), "processor": numerics.cpu()["model"], "cpus": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(),
                         # only a process that already uses CUDA asks it for a name (a probe before a fork would
                         # cost every forked child its CUDA); a GPU run's device name is also in its stream
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_initialized() else None},
            # the CPU kernels that decided the run's bits, and whether they are the same on any x86-64 CPU
            "numerics": numerics.state(), **backend_state()}


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


def _identity(c: dict) -> dict:
    """What a config computes: without its name, the NOT_COMPUTED run options and later options at their defaults."""
    c = canonical(c)
    c.pop("name", None)
    if c.get("perturb", {}).get("generator") == "portable":  # the chunk changes no bit of a portable stream
        c["perturb"].pop("chunk", None)
    for key in NOT_COMPUTED:
        c.get("run", {}).pop(key, None)
    return c


def extends(old: dict, new: dict) -> bool:
    """Is config `new` config `old` with more rounds (name and NOT_COMPUTED options aside)?"""
    a, b = _identity(old), _identity(new)
    ra, rb = a.get("federation", {}).pop("rounds", None), b.get("federation", {}).pop("rounds", None)
    return a == b and ra is not None and rb is not None and rb > ra


def _drop_off_cadence_eval(row: dict, eval_keys, eval_every: int) -> None:
    """An extended run's last row was evaluated because it was the last round; the longer run evaluates it only
    on its cadence."""
    if row["round"] % eval_every:
        for key in eval_keys:
            row.pop(key, None)


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


def _same_stream(out: Path, recorded: dict | None, stream: dict | None, where: str) -> None:
    """Refuse to continue a run whose directions were drawn under another stream fingerprint (hiso/layout.py)."""
    from .layout import mismatch
    why = stream is not None and mismatch(recorded, stream)
    if why:
        raise RunDirError(f"{out}: {where} records directions drawn under another stream ({why}); continuing here "
                          "would follow other directions than the round log's. Resume where it ran (same device, "
                          "perturb.layout and perturb.chunk), or start over with --restart")


def _same_numerics(out: Path, recorded: dict | None, current: dict) -> None:
    """Refuse to continue a run whose earlier rounds ran under other CPU numerics (hiso/numerics.py)."""
    why = numerics.mismatch(recorded, current)
    if why:
        raise RunDirError(f"{out}: run.json records rounds computed under other CPU numerics ({why}); continuing "
                          "here would mix two kernels' rounding in one run. Resume under the numerics it started "
                          f"with ({numerics.MODE_ENV}=..., the same machine for native), or start over with "
                          "--restart; nothing was removed")


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


def _prior(cfg: Config, rundir: RunDir, replace_different: bool, continue_stopped: bool = False) -> dict:
    """The folder's earlier run.json when this config continues it ({} for a fresh start)."""
    old = rundir.read_info()
    if old is None:  # a fresh start: no checkpoint left by something else may be resumed or fallen back to
        found = rundir.results()
        if found and not replace_different:
            raise RunDirError(f"{rundir.path} holds {', '.join(found)} but no run.json: another run's results, or "
                              "a run whose record was lost; nothing was removed. Choose another output folder, or "
                              "pass --replace-different (or --restart) to replace them")
        rundir.clear()
        return {}
    new_config, new_hash = cfg.to_dict(), cfg.hash()
    # the same computation: equal hashes, or equal configs once options added later at their defaults are dropped
    same = old.get("config_hash") == new_hash or _identity(old.get("config", {})) == _identity(new_config)
    finished = old.get("status") in FINAL and (rundir.path / "metrics.csv").exists()
    if same and continue_stopped and finished and old["status"] == "complete" and old.get("stopped"):
        # rounds are a function of (seed, round) and the log: resumable; the stopped run is set aside only once
        # every check has passed (_set_aside)
        return {k: v for k, v in old.items() if k != "stopped"} | {"status": "running", SHORTER: old}
    if same:
        return old if finished or old.get("status") == "running" else {**old, "status": "running"}
    shorter = _shorter_record(rundir)
    if shorter is not None and _identity(shorter.get("config", {})) == _identity(new_config):
        # a lengthening of this run was abandoned (killed, or it failed): the finished shorter run is still here
        _restore_shorter(rundir)
        log.warning("%s: an abandoned lengthening to %s rounds is set aside; the finished %s-round run is back",
                    rundir.path, old.get("config", {}).get("federation", {}).get("rounds"),
                    new_config.get("federation", {}).get("rounds"))
        return rundir.read_info()
    if extends(old.get("config", {}), new_config):
        if finished and (old["status"] != "complete" or old.get("stopped")):
            # a longer run diverges, fails or stops at the same round: the result stands, under the longer config
            old.update(config=new_config, config_hash=new_hash)
            atomic_write(rundir.path / "run.json", json.dumps(old, indent=2))
            return old
        # the same run with a larger round budget: every round is a function of (seed, round) and the log, so
        # continuing from the checkpoint is exactly the longer run.  Nothing is touched here: the finished run is
        # set aside (_set_aside) only after every check of the longer run has passed
        return {**old, "status": "running", SHORTER: old if finished else None,
                "extended_from": old.get("config", {}).get("federation", {}).get("rounds")}
    if replace_different:
        rundir.clear()
        return {}
    raise RunDirError(f"{rundir.path} holds a run of a different config (hash {old.get('config_hash')}, now "
                      f"{new_hash}); choose another output folder, or pass --replace-different")


SHORTER = "_shorter"  # in `old`: the finished run that a lengthening (or a continued stopped run) replaces


def _shorter_record(rundir: RunDir) -> dict | None:
    path = rundir.path / "run.shorter.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return None


def _set_aside(rundir: RunDir, finished: dict) -> None:
    """Before a lengthening computes its first round: keep the finished shorter run as run.shorter.json and
    metrics.shorter.csv, so that killing or failing the longer run loses nothing (its original command restores
    them: _prior).  The longer run's end removes them."""
    src = rundir.path / "metrics.csv"
    if not src.exists():
        return
    atomic_write(rundir.path / "run.shorter.json", json.dumps(finished, indent=2))
    os.replace(src, rundir.path / "metrics.shorter.csv")


def _restore_shorter(rundir: RunDir) -> None:
    # metrics first: a crash between the two renames leaves a run.json that still names the longer run, and the
    # next call restores again
    if (rundir.path / "metrics.shorter.csv").exists():
        os.replace(rundir.path / "metrics.shorter.csv", rundir.path / "metrics.csv")
    os.replace(rundir.path / "run.shorter.json", rundir.path / "run.json")
    (rundir.path / "metrics.partial.csv").unlink(missing_ok=True)


def state_nbytes(obj) -> int:
    """Bytes of the tensors in a (nested) state dict: what its checkpoint holds, counted without copying (state
    dicts hold references)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return len(obj) if isinstance(obj, (bytes, bytearray)) else 0


def _size(n: float) -> str:
    """Bytes as a person reads them: 512 B, 3.4 KB, 1.20 GB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _check_space(out: Path, fed) -> None:
    """Refuse before the first round when the folder cannot hold two checkpoints (the new one and the previous) of
    the real state: the model, the curvature or the optimizer's moments, the replicas of a verified run.  The
    checkpoints the run already has there count as room: each new one replaces an old one."""
    one = state_nbytes(fed.state_dict())
    have = sum((out / n).stat().st_size for n in ("checkpoint.pt", "checkpoint.prev.pt") if (out / n).exists())
    need, free = 2 * one, shutil.disk_usage(out).free
    if free + have < need:
        raise RunDirError(f"--out {out}: {_size(free)} free, but this run's checkpoints need about {_size(need)} "
                          f"(two of {_size(one)}: the checkpoint and the previous one; {_size(have)} of them are "
                          "there already); free space there or choose another folder; nothing was removed")


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
        info["initial_eval"] = task.evaluate(cfg.run.eval_split)
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
            t0 = time.perf_counter()
            row = fed.run_round()
            r = row["round"]
            if r % cfg.run.eval_every == 0 or r == total:
                fed.load_server_model()
                ev = task.evaluate(cfg.run.eval_split)
                row.update(ev)
                # one line per evaluation in the run's log (INFO on logger hiso.run; the CLI shows it)
                log.info("%s round %d/%d: train_loss %.4g, %s", cfg.name, r, total, row["train_loss"],
                         ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
            row["wall_seconds"] = time.perf_counter() - t0
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
