"""A run folder's files: atomic writes with the umask's modes, one writer at a time, and state files that
name themselves when they are unreadable.

- `atomic_write` / `atomic_torch_save`: a temp file in the same folder, renamed over the target; the temp file
  is removed on every failure path, and the result gets the mode a plain `open()` would (0666 & ~umask).
- `RunDir.lock()`: an advisory fcntl lock on `<out>/.lock`, held for the process's life (the kernel releases it
  on exit, also on kill -9).  A second writer gets RunLocked naming the holder's pid.
- `checkpoint.pt` is written after the previous one is moved to `checkpoint.prev.pt`, so an unreadable
  checkpoint falls back to the one before it (every round is a function of the seed and the log, so resuming
  from an earlier checkpoint ends identically).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
STATE_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "metrics.partial.csv", "run.json")


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (held by another writer, unwritable, unreadable state)."""


class OutputError(RuntimeError):
    """Writing an output failed (e.g. the disk is full); the run resumes from its last checkpoint."""


def _mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_via_temp(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(f"cannot write {path.name} in {path.parent}: {os.strerror(e.errno)}; free space "
                              "there and rerun the same command (the run resumes from its last checkpoint)") from None
        if isinstance(e, RuntimeError) and "unexpected pos" in str(e):  # torch's wording of a short write
            raise OutputError(f"cannot write {path.name} in {path.parent}: the write was cut short ({e}); "
                              "free space there and rerun the same command") from None
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see a partial file."""
    payload = data.encode() if isinstance(data, str) else data

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(payload)
    _write_via_temp(Path(path), write)


def build_dir(target: Path, build, replace: bool = False) -> Path:
    """Create a folder through `build(tmp)` on a temp folder beside it, then a rename: an interruption leaves
    nothing half-made.  An existing target is kept (a cache), or replaced when `replace`."""
    target = Path(target)
    if target.exists() and not replace:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        if replace and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError:
        if replace or not target.exists():  # a cache another process built meanwhile is as good as ours
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def atomic_torch_save(obj, path: Path) -> None:
    import torch
    _write_via_temp(Path(path), lambda tmp: torch.save(obj, tmp))


class RunDir:
    """The output folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    def lock(self) -> None:
        """Create the folder if needed and take its writer lock (RunDirError: unwritable, or held)."""
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
            f.close()
            raise RunDirError(f"--out {self.path} is being written by another run (pid {holder}); wait for it, "
                              "or choose another folder") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

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
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path} is unreadable ({e}); rerun with --restart to start this run again from "
                              "round 0") from None

    def save_checkpoint(self, obj) -> None:
        ckpt = self.path / "checkpoint.pt"
        if ckpt.exists():
            os.replace(ckpt, self.path / "checkpoint.prev.pt")
        atomic_torch_save(obj, ckpt)

    def load_checkpoint(self):
        """The newest readable checkpoint (None when there is none); RunDirError when none is readable."""
        import torch
        errors = []
        for name in ("checkpoint.pt", "checkpoint.prev.pt"):
            path = self.path / name
            if not path.exists():
                continue
            try:
                state = torch.load(path, weights_only=False)
            except Exception as e:  # noqa: BLE001 - torch raises EOFError, RuntimeError, UnpicklingError, ...
                errors.append(f"{path} ({type(e).__name__}: {e})")
                log.warning("%s is unreadable (%s); trying the previous checkpoint", path, e)
                continue
            return state
        if errors:
            raise RunDirError(f"no readable checkpoint: {'; '.join(errors)}; rerun with --restart to start this run "
                              "again from round 0")
        return None
