"""A run folder's files: atomic writes with the umask's modes, one writer at a time, and state files that
name themselves when they are unreadable.

- Its files are written through hiso/io.py (`atomic_write`, `atomic_torch_save`: whole or not at all).
- `RunDir.lock()`: an advisory fcntl lock on `<out>/.lock`, held for the process's life (the kernel releases it
  on exit, also on kill -9).  A second writer gets RunLocked naming the holder's pid.
- `checkpoint.pt` is written after the previous one is moved to `checkpoint.prev.pt`, so an unreadable
  checkpoint falls back to the one before it (every round is a function of the seed and the log, so resuming
  from an earlier checkpoint ends identically).  Once a run has ended only the final checkpoint stays (none
  with `run.keep_checkpoint: false`).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from .io import OutputError, atomic_torch_save, atomic_write, build_dir  # noqa: F401 - the run folder's writers

log = logging.getLogger(__name__)
STATE_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "metrics.partial.csv", "run.json",
               "metrics.shorter.csv", "run.shorter.json")  # the last two: a finished run a lengthening set aside


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (held by another writer, unwritable, unreadable state)."""


class RunDir:
    """The output folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    def lock(self, wait: bool = False) -> None:
        """Create the folder if needed and take its writer lock (RunDirError: unwritable, or held).  With `wait`, a
        held lock is waited for instead (the workflow's jobs: a second Snakemake's job for the same run must not
        fail while the first one's job writes it, or Snakemake removes that job's finished outputs)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "a+")  # noqa: SIM115 - held open for the run's life
        except OSError as e:
            raise RunDirError(f"--out {self.path}: cannot write there ({e.strerror})") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            if wait:
                log.warning("--out %s is being written by another run (pid %s); waiting for it", self.path, holder)
                fcntl.flock(f, fcntl.LOCK_EX)
                return self._took(f)
            f.close()
            raise RunDirError(f"--out {self.path} is being written by another run (pid {holder}); wait for it, "
                              "or choose another folder") from None
        self._took(f)

    def _took(self, f) -> None:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f
        # no other writer holds the folder: a temp file of an atomic write (.<name>.XXXX) is a killed process's
        for name in STATE_FILES:
            for stale in self.path.glob(f".{name}.*"):
                stale.unlink(missing_ok=True)

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove_if_empty(self) -> None:
        """Remove a folder this process created when it holds nothing but the lock file (after unlock)."""
        try:
            if {p.name for p in self.path.iterdir()} <= {".lock"}:
                (self.path / ".lock").unlink(missing_ok=True)
                self.path.rmdir()
        except OSError:
            pass  # another process took the folder meanwhile, or it is not ours to remove

    def clear(self) -> None:
        """Remove the run's state files (the lock must be held)."""
        assert self._lock_file is not None, "clear() needs the folder's lock"
        for name in STATE_FILES:
            (self.path / name).unlink(missing_ok=True)

    def read_info(self) -> dict | None:
        path = self.path / "run.json"
        if not path.exists():
            return None
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path} is unreadable ({e}); rerun with --restart to start this run again from "
                              "round 0") from None
        why = _invalid_info(info)
        if why:
            raise RunDirError(f"{path} is not a run's record ({why}); nothing was removed. Rerun with --restart to "
                              "start this run again from round 0, or move the folder away")
        return info

    def results(self) -> list[str]:
        """The state files the folder holds (what starting afresh would remove)."""
        return [name for name in STATE_FILES if (self.path / name).exists()]

    def save_checkpoint(self, obj) -> None:
        ckpt = self.path / "checkpoint.pt"
        if ckpt.exists():
            os.replace(ckpt, self.path / "checkpoint.prev.pt")
        atomic_torch_save(obj, ckpt)

    def retire_checkpoints(self, keep_final: bool) -> None:
        """After a run has ended: drop the previous checkpoint, and the final one too unless `keep_final`."""
        (self.path / "checkpoint.prev.pt").unlink(missing_ok=True)
        if not keep_final:
            (self.path / "checkpoint.pt").unlink(missing_ok=True)

    def load_checkpoint(self):
        """The newest readable checkpoint (None when there is none); RunDirError when none is readable."""
        import torch
        errors = []
        for name in ("checkpoint.pt", "checkpoint.prev.pt"):
            path = self.path / name
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)  # a GPU run's, on any node
            except Exception as e:  # noqa: BLE001 - torch raises EOFError, RuntimeError, UnpicklingError, ...
                errors.append(f"{path} ({type(e).__name__}: {e})")
                log.warning("%s is unreadable (%s); trying the previous checkpoint", path, e)
                continue
            return state
        if errors:
            raise RunDirError(f"no readable checkpoint: {'; '.join(errors)}; rerun with --restart to start this run "
                              "again from round 0")
        return None


# the fields a resume reads, and the types they must have (missing ones are allowed: older runs lack some)
INFO_FIELDS = {"config": dict, "config_hash": str, "status": str, "segments": list, "rounds_done": int,
               "stream": (dict, type(None)), "initial_eval": (dict, type(None)), "message": str}


def _invalid_info(info) -> str | None:
    if not isinstance(info, dict):
        return f"it holds a {type(info).__name__}, not an object"
    for key, kind in INFO_FIELDS.items():
        if key in info and not isinstance(info[key], kind):
            return f"its {key!r} is a {type(info[key]).__name__}"
    return None
