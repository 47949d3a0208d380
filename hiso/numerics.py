"""CPU numerics: which kernels decide a run's float bits, pinned so that the same config and seed give the same
bits on any x86-64 CPU with AVX2 (AMD or Intel), and recorded in run.json.

Three libraries pick their kernels by the CPU they run on, and each choice moves the last bits of a result:
ATen's vectorised kernels (AVX2 or AVX-512), MKL's sgemm (per ISA and per vendor) and oneDNN's convolutions
(per ISA and cache size).  Long zeroth-order runs amplify those bits into different curves.  The mode is set by
`HISO_NUMERICS` (read when `hiso` is imported, before torch is):

    portable (default)  ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=COMPATIBLE (MKL's one branch that its documentation
                        says gives the same results on Intel and non-Intel CPUs; its AVX2 branch falls back to
                        AUTO on AMD), ONEDNN_MAX_CPU_ISA=AVX2 and convolutions without oneDNN
                        (torch.backends.mkldnn off: ATen's own im2col + MKL), the language models' linear layers
                        on NumPy's OpenBLAS with its core type fixed, OPENBLAS_CORETYPE=Haswell (hiso/blas.py:
                        MKL's COMPATIBLE sgemm is several times slower), a fixed thread count (run.threads, 1 when
                        it is 0, for torch and OpenBLAS alike), and NumPy's AVX-512 dispatch off
                        (NPY_DISABLE_CPU_FEATURES: its AVX-512 float64 exp, used for log-normal spectra, differs
                        from its AVX2 one in the last bit).  Its measured cost: docs/results/perf.md.
    native              every library's own choice for this CPU: faster, bit-reproducible on this machine only.

These variables are read once, when the libraries load: a process that imported torch before `hiso` cannot pin
them, and its runs record `bit_identical_across_cpus: false`.  GPU runs record the mode too, but the claim is
about CPU kernels only.  A resume under other numerics than the run started with is refused (hiso/runner.py).
This module imports only the standard library at module level (the warm runner's client imports it).
"""
from __future__ import annotations

import os
import sys

MODE_ENV = "HISO_NUMERICS"
PINNED_ENV = "HISO_NUMERICS_PINNED"  # set beside the variables hiso pinned (a native child process drops them)
MODES = ("portable", "native")
BLAS_CORE = "Haswell"  # the OpenBLAS core type whose sgemm the LM tiers' products run on (hiso/blas.py)
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "OPENBLAS_CORETYPE": BLAS_CORE}
# the CPU flags that decide which kernels the libraries may pick (recorded, not all of /proc/cpuinfo's)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

# NumPy's dispatch groups above AVX2, with the CPU flags each needs: only those this CPU has are disabled (NumPy
# warns about a feature the machine lacks)
NUMPY_ABOVE_AVX2 = {"X86_V4": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
                    "AVX512_ICL": ("avx512f", "avx512_vnni", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg",
                                   "avx512_vpopcntdq", "avx512ifma"),
                    "AVX512_SPR": ("avx512f", "avx512_fp16")}
NUMPY_ENV = "NPY_DISABLE_CPU_FEATURES"

_pinned_before_torch: bool | None = None  # set by setup(): did hiso set the variables before torch loaded?


class NumericsError(ValueError):
    """HISO_NUMERICS names no mode."""


def mode() -> str:
    value = os.environ.get(MODE_ENV, "portable").strip().lower() or "portable"
    if value not in MODES:
        raise NumericsError(f"{MODE_ENV}={os.environ[MODE_ENV]!r} is not a numerics mode; use one of "
                            f"{', '.join(MODES)} (hiso/numerics.py)")
    return value


def setup() -> None:
    """Pin the portable kernels' variables in this process's environment (inherited by its children: Snakemake
    jobs, SuperNodes, the warm runner).  Called by `hiso/__init__.py`, so before torch whenever hiso comes first."""
    global _pinned_before_torch
    try:
        current = mode()
    except NumericsError:
        return  # reported by check(), where a refusal can be printed
    if current == "portable":
        os.environ.update(PORTABLE_ENV)
        flags = _flags()
        above = [g for g, need in NUMPY_ABOVE_AVX2.items() if all(f in flags for f in need)]
        if above and "numpy" not in sys.modules:
            os.environ[NUMPY_ENV] = " ".join(above)
        os.environ[PINNED_ENV] = "1"  # these values came from hiso: a native child may drop them
    elif os.environ.pop(PINNED_ENV, None):  # native under a portable parent: not the user's settings, drop them
        for key, value in PORTABLE_ENV.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        os.environ.pop(NUMPY_ENV, None)
    if _pinned_before_torch is None:
        _pinned_before_torch = "torch" not in sys.modules


def threads(requested: int) -> int:
    """The torch thread count a run uses: `run.threads`, or under portable numerics 1 when it is 0 (a
    machine-dependent count splits reductions differently)."""
    return requested if requested > 0 or mode() == "native" else 1


def apply_torch(requested_threads: int = 0) -> None:
    """The settings torch takes at run time: oneDNN off for convolutions and the thread count."""
    import torch
    if mode() == "portable":
        torch.backends.mkldnn.enabled = False
    n = threads(requested_threads)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    tpc = _threadpoolctl() if n > 0 else None
    if tpc is not None:  # without it OpenBLAS keeps its count, and state() claims no portable bits
        tpc.threadpool_limits(limits=n, user_api="blas")  # OpenBLAS splits a product differently per thread count


def _threadpoolctl():
    """threadpoolctl with NumPy (and so OpenBLAS) loaded, so that it finds the library; None in an image without
    it (a GPU machine's own python3)."""
    import numpy  # noqa: F401
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def blas() -> dict:
    """NumPy's OpenBLAS as threadpoolctl reports it: version, core type (architecture) and threads (all None
    where threadpoolctl is missing: then nothing says which kernel ran, and no run claims portable bits)."""
    tpc = _threadpoolctl()
    if tpc is None:
        return {"version": None, "architecture": None, "threads": None}
    info = next((i for i in tpc.threadpool_info() if i.get("internal_api") == "openblas"), {})
    return {"version": info.get("version"), "architecture": info.get("architecture"),
            "threads": info.get("num_threads")}


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (it describes them all); {} where there is none."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def cpu() -> dict:
    """The CPU's vendor, model and ISA flags (Linux: /proc/cpuinfo; elsewhere what platform says)."""
    import platform
    fields = _cpuinfo()
    flags = set(fields.get("flags", "").split())
    return {"vendor": fields.get("vendor_id"), "model": fields.get("model name") or platform.processor() or None,
            "flags": [f for f in ISA_FLAGS if f in flags]}


def state() -> dict:
    """run.json's `numerics`: the mode, what it set, what the libraries report, and whether the run's bits claim
    to be the same on any x86-64 CPU with AVX2."""
    import torch
    current = mode()
    capability = torch.backends.cpu.get_cpu_capability()
    settings = {k: os.environ.get(k) for k in PORTABLE_ENV}
    openblas = blas()
    portable = (current == "portable" and bool(_pinned_before_torch) and settings == PORTABLE_ENV
                and capability == "AVX2" and not torch.backends.mkldnn.enabled
                and openblas["architecture"] == BLAS_CORE)
    return {"mode": current, "settings": settings, "numpy_disabled": os.environ.get(NUMPY_ENV, ""),
            "aten_capability": capability, "blas": openblas,
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled), "torch_threads": torch.get_num_threads(),
            "pinned_before_torch": bool(_pinned_before_torch), "cpu": cpu(), "bit_identical_across_cpus": portable}


def fingerprint(record: dict | None) -> dict | None:
    """What must match for a resume to continue the same bits: the mode and its kernels; under native numerics
    also the CPU model and the thread count (its kernels are this machine's)."""
    if not record:
        return None
    keys = ["mode", "settings", "aten_capability", "mkldnn_enabled", "bit_identical_across_cpus"]
    fp = {k: record.get(k) for k in keys}
    fp["blas_architecture"] = (record.get("blas") or {}).get("architecture")
    if not record.get("bit_identical_across_cpus"):
        fp.update(cpu_model=(record.get("cpu") or {}).get("model"), torch_threads=record.get("torch_threads"))
    return fp


def mismatch(recorded: dict | None, current: dict) -> str | None:
    """Why a run started under `recorded` numerics cannot continue under `current` (None: it can; a run from
    before numerics were recorded is continued under its old terms, as the stream check does)."""
    if recorded is None:
        return None
    a, b = fingerprint(recorded), fingerprint(current)
    diff = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in b if a.get(k) != b.get(k)]
    return "; ".join(diff) or None
