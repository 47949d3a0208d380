"""Zeroth-order directional derivatives along z = H^{-1/2} u, P perturbations per step (paper Eq. 8).

forward:  g_j = [f(x + mu z_j) - f(x)] / mu                 P + 1 forward passes (f(x) shared)
central:  g_j = [f(x + mu z_j) - f(x - mu z_j)] / (2 mu)    2P forward passes
second:   central g_j and s_j = [f(x + mu z_j) + f(x - mu z_j) - 2 f(x)] / (2 mu^2)    2P + 1 passes
          (on a quadratic s_j = z_j^T A z_j / 2 exactly: the directional curvature)

Perturbations are applied and undone in place; x drifts by float rounding only, and a client's local
progress is discarded at the end of a round anyway (the log defines the global model).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .perturb import StepDirections, perturb_

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


@torch.no_grad()
def estimate(params: list[torch.Tensor], loss: Callable[[], float], dirs: StepDirections, mu: float,
             difference: str = "forward", second: bool = False) -> Estimate:
    """Directional derivatives of `loss` (evaluated at the current params) along the step's P directions;
    with second=True (central differences only) also the second differences s_j."""
    num = dirs.num
    g = np.empty(num, dtype=np.float64)
    if second and difference != "central":
        raise ValueError("second differences need difference='central' (f(x + mu z) and f(x - mu z))")
    if difference == "forward":
        f0 = loss()
        for j in range(num):
            perturb_(params, dirs(j), mu)
            fj = loss()
            perturb_(params, dirs(j), -mu)
            g[j] = (fj - f0) / mu
        return Estimate(g.astype(np.float32), float(f0), num + 1)
    if difference == "central":
        f0 = loss() if second else None
        s = np.empty(num, dtype=np.float64)
        mean = 0.0
        for j in range(num):
            perturb_(params, dirs(j), mu)
            fp = loss()
            perturb_(params, dirs(j), -2.0 * mu)
            fm = loss()
            perturb_(params, dirs(j), mu)
            g[j] = (fp - fm) / (2.0 * mu)
            mean += 0.5 * (fp + fm) / num
            if second:
                s[j] = (fp + fm - 2.0 * f0) / (2.0 * mu * mu)
        if second:
            return Estimate(g.astype(np.float32), float(f0), 2 * num + 1, s.astype(np.float32))
        return Estimate(g.astype(np.float32), float(mean), 2 * num)
    raise ValueError(f"unknown difference {difference!r}; choose one of {DIFFERENCES}")
