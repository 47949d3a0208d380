"""Atomic outputs: every file and folder the suite writes appears whole or not at all.

- `atomic_write` / `atomic_torch_save`: a temp file in the same folder, renamed over the target; the temp file
  is removed on every failure path, and the result gets the mode a plain `open()` would (0666 & ~umask).
- `build_dir`: a folder built beside its target and renamed into place (caches, mirrors, fixtures).
- A full disk becomes `OutputError` with what to do (exit 5 on the command line); the run resumes.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path


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
