"""One GPU per job on a multi-GPU workstation: a run claims a free device slot with an advisory lock.

`python -m hiso run --gpu-slot` (the workflow passes it to GPU runs) reads the devices to share from
HISO_GPUS (e.g. "0,1,2,3"); without it, or when CUDA_VISIBLE_DEVICES is already set (SLURM sets it per job),
nothing changes.  The run takes the first device whose lock file it can lock and sets CUDA_VISIBLE_DEVICES to
it before CUDA initialises; the lock is held for the process's life and released by the kernel when it ends,
also on kill -9.  Snakemake's `--resources gpu=N` keeps at most N GPU runs alive, so one is always free.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

_held = []  # open lock files: closing one would release its slot


def claim(devices: str | None = None, lock_dir: str | Path | None = None) -> str | None:
    """Claim a device from `devices` (default $HISO_GPUS); returns it (and sets CUDA_VISIBLE_DEVICES), or None
    when there is nothing to share.  RuntimeError when every device is taken."""
    devices = os.environ.get("HISO_GPUS") if devices is None else devices
    if not devices or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    lock_dir = Path(lock_dir or os.environ.get("HISO_GPU_LOCKS", tempfile.gettempdir()))
    for dev in [d.strip() for d in devices.split(",") if d.strip()]:
        f = open(lock_dir / f"hiso-gpu-{dev}.lock", "a+")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        os.environ["CUDA_VISIBLE_DEVICES"] = dev
        return dev
    raise RuntimeError(f"every GPU in HISO_GPUS={devices} is held by another run; run snakemake with "
                       f"--resources gpu=<number of GPUs>")
