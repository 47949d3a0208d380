"""Zeroth-order directional derivatives along z = H^{-1/2} u, P perturbations per step (paper Eq. 8).

forward:  g_j = [f(x + mu z_j) - f(x)] / mu                 P + 1 forward passes (f(x) shared)
central:  g_j = [f(x + mu z_j) - f(x - mu z_j)] / (2 mu)    2P forward passes
second:   central g_j and s_j = [f(x + mu z_j) + f(x - mu z_j) - 2 f(x)] / (2 mu^2)    2P + 1 passes
          (on a quadratic s_j = z_j^T A z_j / 2 exactly: the directional curvature)

Perturbations are applied and undone in place; x drifts by float rounding only, and a client's local
progress is discarded at the end of a round anyway (the log defines the global model).  With `fused` (the flat
layout) a forward-difference step writes x P + 1 times: each restore is folded into the next perturbation
(perturb.swap_), and the last one into the local update (`leave`, then perturb.step_(restore=mu)).

The loss may return a device tensor: the P + 1 (or 2P) losses stay on the device until the step's scalars are
formed, one transfer per step (a host sync on an accelerator), not one per forward pass.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .perturb import StepDirections, perturb_, swap_

DIFFERENCES = ("forward", "central")


@dataclass
class Estimate:
    scalars: np.ndarray  # float32 [P]: what goes on the wire
    loss: float  # f(x) on this batch (forward, second) or the mean of f(x +- mu z) (central, O(mu^2) close)
    forward_passes: int
    second: np.ndarray | None = None  # float32 [P] second differences (difference="central", second=True)


def forward_passes_per_step(difference: str, num: int, second: bool = False) -> int:
    """Forward passes one local step costs."""
    if second:
        return 2 * num + 1
    return num + 1 if difference == "forward" else 2 * num


def to_host(values: list) -> list[float]:
    """Losses (floats or 0-dim tensors on one device) as floats, with one device-to-host transfer."""
    if not any(isinstance(v, torch.Tensor) for v in values):
        return [float(v) for v in values]
    return torch.stack([v.reshape(()) for v in values]).cpu().tolist()


@torch.no_grad()
def estimate(params: list[torch.Tensor], loss: Callable[[], float | torch.Tensor], dirs: StepDirections, mu: float,
             difference: str = "forward", second: bool = False, fused: bool = False, leave: bool = False) -> Estimate:
    """Directional derivatives of `loss` (evaluated at the current params) along the step's P directions;
    with second=True (central differences only) also the second differences s_j.  `fused` (forward differences):
    fold each restore into the next perturbation; `leave`: return with x + mu z_{P-1} (the caller's update removes
    it)."""
    num = dirs.num
    if second and difference != "central":
        raise ValueError("second differences need difference='central' (f(x + mu z) and f(x - mu z))")
    if leave and not (fused and difference == "forward"):
        raise ValueError("leave=True needs fused forward differences")
    if difference == "forward":
        values = [loss()]
        for j in range(num):
            if fused and j:
                swap_(params, dirs(j - 1), dirs(j, slot=1), mu, dirs.scratch)
            else:
                perturb_(params, dirs(j), mu)
            values.append(loss())
            if not fused:
                perturb_(params, dirs(j), -mu)
        if fused and not leave:
            perturb_(params, dirs(num - 1), -mu)
        f0, *fs = to_host(values)
        g = np.array([(fj - f0) / mu for fj in fs], dtype=np.float64)
        return Estimate(g.astype(np.float32), float(f0), num + 1)
    if difference == "central":
        values = [loss()] if second else [None]
        for j in range(num):
            perturb_(params, dirs(j), mu)
            values.append(loss())
            perturb_(params, dirs(j), -2.0 * mu)
            values.append(loss())
            perturb_(params, dirs(j), mu)
        host = to_host(values[1:]) if values[0] is None else to_host(values)
        f0 = None if values[0] is None else host.pop(0)
        g = np.empty(num, dtype=np.float64)
        s = np.empty(num, dtype=np.float64)
        mean = 0.0
        for j in range(num):
            fp, fm = host[2 * j], host[2 * j + 1]
            g[j] = (fp - fm) / (2.0 * mu)
            mean += 0.5 * (fp + fm) / num
            if second:
                s[j] = (fp + fm - 2.0 * f0) / (2.0 * mu * mu)
        if second:
            return Estimate(g.astype(np.float32), float(f0), 2 * num + 1, s.astype(np.float32))
        return Estimate(g.astype(np.float32), float(mean), 2 * num)
    raise ValueError(f"unknown difference {difference!r}; choose one of {DIFFERENCES}")
