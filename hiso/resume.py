"""Whether a run folder may be resumed, lengthened or replaced, checked before any file is touched (hiso/runner.py
calls these): the config's identity, a longer budget, the stream and CPU numerics a run started under, the room
for its checkpoints, and the finished shorter run a lengthening sets aside (restorable when it is abandoned)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from . import numerics
from .config import NOT_COMPUTED, Config, canonical
from .io import atomic_write
from .rundir import RunDir, RunDirError

log = logging.getLogger("hiso.run")
FINAL = ("complete", "diverged", "failed")


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
    """Bytes as a person reads them: 512 B, 3.4 KB, 1.2 GB."""
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
