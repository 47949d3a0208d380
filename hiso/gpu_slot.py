"""One GPU per job on a multi-GPU workstation: a run claims a free device slot with an advisory lock.

`python -m hiso run --gpu-slot` (the workflow passes it to GPU runs) shares the devices listed in HISO_GPUS
(e.g. "0,1,2,3"), else those CUDA_VISIBLE_DEVICES already lists (set but empty: none), else the CUDA ordinals of
the machine's GPUs (counted by NVML, or from /dev/nvidiaN files, without initialising CUDA).  The run takes the first device whose lock file it can lock and narrows
CUDA_VISIBLE_DEVICES to it before CUDA initialises; the lock is held for the process's life and released by the
kernel when it ends, also on kill -9.  Snakemake's `--resources gpu=N` keeps at most N GPU runs alive, so one is
always free; asked for more slots than devices, a run is refused with a message that says so.  A job that sees a
single device (SLURM's per-job CUDA_VISIBLE_DEVICES) has nothing to share and takes it without a lock, so jobs
whose device namespaces differ never contend for one lock name.
"""
from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path

_held = []  # open lock files: closing one would release its slot


def devices_to_share(dev_dir: str | Path = "/dev") -> tuple[list[str], str]:
    """The device ids a slot is chosen from, and where the list came from.  Ids are what CUDA_VISIBLE_DEVICES
    takes: the listed ones, else CUDA ordinals 0..n-1 of the n devices NVML counts (or, without NVML, the n
    /dev/nvidiaN files: their numbers are driver minors, not ordinals; a container that exposes only
    /dev/nvidia3 has one device, ordinal 0).  CUDA_VISIBLE_DEVICES set but empty hides every device."""
    value = os.environ.get("HISO_GPUS")
    if value is not None and value.strip():
        return [d.strip() for d in value.split(",") if d.strip()], "HISO_GPUS"
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:  # "" or "-1": CUDA sees no device
        listed = [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
        return listed, "CUDA_VISIBLE_DEVICES"
    count = _nvml_count()
    if count is not None:
        return [str(i) for i in range(count)], "NVML"
    found = [p for p in Path(dev_dir).glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)]
    return [str(i) for i in range(len(found))], f"{dev_dir}/nvidiaN (counted)"


def _nvml_count() -> int | None:
    """The number of GPUs NVML sees (no CUDA context is made), or None without NVML."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no module, no driver, no library: fall back to counting device files
        return None


def claim(devices: str | None = None, lock_dir: str | Path | None = None, dev_dir: str | Path = "/dev") -> str | None:
    """Claim a device (from `devices`, else devices_to_share()); returns it and sets CUDA_VISIBLE_DEVICES, or None
    when there is no device.  RuntimeError when every device is taken."""
    if devices is not None:
        listed, source = [d.strip() for d in devices.split(",") if d.strip()], "devices"
    else:
        listed, source = devices_to_share(dev_dir)
    if not listed:
        return None
    if len(listed) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = listed[0]
        return listed[0]
    lock_dir = Path(lock_dir or os.environ.get("HISO_GPU_LOCKS", tempfile.gettempdir()))
    for dev in listed:
        f = open(lock_dir / f"hiso-gpu-{dev}.lock", "a+")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        os.environ["CUDA_VISIBLE_DEVICES"] = dev
        return dev
    raise RuntimeError(f"all {len(listed)} GPUs of {source} ({','.join(listed)}) are held by other runs; run "
                       f"snakemake with --resources gpu={len(listed)} (at most one GPU run per device)")
