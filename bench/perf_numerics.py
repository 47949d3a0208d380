"""What the portable CPU numerics cost (hiso/numerics.py): each tier's kernels timed under HISO_NUMERICS=portable
and =native, in fresh processes (the mode is fixed when torch loads), alternated, one thread.

    python -m bench.perf --only numerics --repeats 3

Kernels: the LM tiers' linear-layer product (160x576 by 576x1536: an nn.Linear as hiso.models builds it, so on
OpenBLAS's pinned kernel under portable numerics, hiso/blas.py), the same product through torch's MKL sgemm
(`a @ b`: MKL's COMPATIBLE branch under portable numerics), the digits CNN's forward + backward (batch 32,
convolutions), 200 rounds of the default tier's quadratic (HiSo), 40 rounds of its digits run (HiSo), and one
SmolLM2-135M-Instruct + LoRA r8 forward of 4 x 40 tokens (last-token logits).  Each process reports the best of a
few timings per kernel and a checksum of the kernel's output; a row gives the medians over --repeats processes
per mode, portable over native, and whether the two modes computed the same bits on this CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("sgemm", "mkl_sgemm", "conv", "quadratic", "digits", "smollm2")


def _best(fn, n: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _digest(x) -> str:
    import torch
    if isinstance(x, torch.Tensor):
        return hashlib.sha256(x.detach().contiguous().numpy().tobytes()).hexdigest()[:12]
    return hashlib.sha256(str(x).encode()).hexdigest()[:12]


def child() -> dict:
    """In a fresh process (HISO_NUMERICS set by the parent): {kernel: (seconds, digest)}."""
    import torch

    import hiso  # noqa: F401 - pins the numerics before torch
    from hiso import numerics
    from hiso.config import load_config
    from hiso.results import reproducible
    from hiso.run import run
    numerics.apply_torch(1)
    g = torch.Generator().manual_seed(0)
    out = {}
    a, b = torch.randn(160, 576, generator=g), torch.randn(576, 1536, generator=g)
    from hiso import blas
    linear = torch.nn.Linear(576, 1536, bias=False)
    with torch.no_grad():
        linear.weight.copy_(b.t())
    blas.route(linear)
    with torch.no_grad():
        t, y = _best(lambda: linear(a), 50)
    out["sgemm"] = (t, _digest(y))
    t, y = _best(lambda: a @ b, 50)
    out["mkl_sgemm"] = (t, _digest(y))
    from hiso.tasks.digits import DigitsCNN
    torch.manual_seed(0)
    net = DigitsCNN()
    x = torch.randn(32, 1, 8, 8, generator=g)

    def conv():
        net.zero_grad()
        loss = net(x).square().mean()
        loss.backward()
        return loss.detach()
    t, y = _best(conv, 20)
    out["conv"] = (t, _digest(y))
    for name, config, rounds in (("quadratic", "tests/golden/quadratic-hiso.yaml", 200),
                                 ("digits", "tests/golden/digits-hiso.yaml", 40)):
        cfg = load_config(ROOT / config, [f"federation.rounds={rounds}", f"run.eval_every={rounds}"])
        t, res = _best(lambda cfg=cfg: run(cfg).metrics, 2)
        out[name] = (t, _digest(reproducible(res).to_csv(index=False)))
    cfg = load_config(ROOT / "tests/golden/smollm2-lora-hiso.yaml")
    from hiso.runner import build_federation
    _, task = build_federation(cfg)
    import numpy as np
    batch = task.batch(0, np.random.default_rng(0), 4)
    with torch.no_grad():
        t, y = _best(lambda: task.loss(batch), 5)
    out["smollm2"] = (t, _digest(y))
    return {k: list(v) for k, v in out.items()}


def bench_numerics(repeats: int) -> list[dict]:
    import numpy as np
    times = {m: {k: [] for k in KERNELS} for m in ("native", "portable")}
    digests = {m: {} for m in times}
    for _ in range(repeats):
        for mode in ("native", "portable"):  # alternated, so that load drifts hit both alike
            env = {**os.environ, "HISO_NUMERICS": mode, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
            p = subprocess.run([sys.executable, "-m", "bench.perf_numerics"], capture_output=True, text=True, env=env,
                               cwd=ROOT, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            for k, (t, d) in res.items():
                times[mode][k].append(t)
                digests[mode][k] = d
    rows = []
    for k in KERNELS:
        nat, por = float(np.median(times["native"][k])), float(np.median(times["portable"][k]))
        rows.append({"kernel": k, "native s": nat, "portable s": por, "portable / native": por / nat,
                     "same bits in both modes": digests["native"][k] == digests["portable"][k],
                     "repeats": repeats})
    return rows


if __name__ == "__main__":
    print(json.dumps(child()))
