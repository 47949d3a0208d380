"""Curvature diagnostics: the true Hessian diagonal, and how well a learned curvature agrees with it.

- `true_diagonal(task)`: exact on the synthetic quadratic; elsewhere Hutchinson's estimator
  diag(A) ~ mean_v v * (A v) with Rademacher v and Hessian-vector products by double backward through the
  task's differentiable loss (`task.grad_loss(batch)`), on a fixed batch.
- `agreement(learned, true)`: Spearman rank correlation, the scale offset median(log10 learned/true) and the
  spread of that log-ratio (0 = equal up to one global scale).
- `zeta(learned, true)`: Tr(H^{-1/2} A H^{-1/2}) = sum_i A_ii / H_i for a diagonal H (the paper's zeta, with
  the diagonal of A), and the scale-free effective rank of the whitened Hessian diagonal
  (sum_i A_ii/H_i) / max_i (A_ii/H_i), beside the effective rank sum_i A_ii / max_i A_ii of the raw one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def true_diagonal(task, samples: int = 64, batch=None, seed: int = 0) -> torch.Tensor:
    """The Hessian diagonal of the task's loss at the current parameters, as one flat float64 vector."""
    if hasattr(task, "hessian_diagonal"):
        return torch.cat([h.reshape(-1) for h in task.hessian_diagonal()]).double()
    if not hasattr(task, "grad_loss"):
        raise TypeError(f"{type(task).__name__} has no differentiable loss (grad_loss) for Hessian-vector products")
    if batch is None:
        batch = task.batch(0, np.random.default_rng(seed), 256)
    params = task.params()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    try:  # the math attention kernel: the fused CPU/GPU ones have no double backward
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            grads = torch.autograd.grad(task.grad_loss(batch), params, create_graph=True)
            for k in range(samples):
                # drawn by the CPU generator (the same bits on any device), then placed on the parameter's device
                vs = [torch.randint(0, 2, p.shape, generator=gen).to(device=p.device, dtype=p.dtype).mul_(2).sub_(1)
                      for p in params]
                hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=k < samples - 1)
                for a, v, h in zip(acc, vs, hv):
                    a.add_((v * h).double(), alpha=1.0 / samples)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return torch.cat([a.reshape(-1) for a in acc])


def agreement(learned: torch.Tensor, true: torch.Tensor, max_points: int = 1_000_000) -> dict[str, float]:
    """Rank and scale agreement of a learned diagonal with the true one (entries with true > 0 only)."""
    x, y = learned.detach().double().reshape(-1).cpu(), true.detach().double().reshape(-1).cpu()  # numpy needs host
    if x.numel() > max_points:  # a fixed subsample keeps large models cheap
        idx = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:max_points]
        x, y = x[idx], y[idx]
    keep = (y > 0) & (x > 0)
    out = {"spearman": float("nan"), "log10_scale": float("nan"), "log10_spread": float("nan"),
           "positive_fraction": float(keep.double().mean())}
    if int(keep.sum()) < 3:
        return out
    xs, ys = x[keep].numpy(), y[keep].numpy()
    if np.ptp(xs) > 0 and np.ptp(ys) > 0:
        import scipy.stats  # 0.6 s to import: only this diagnostic pays it
        out["spearman"] = float(scipy.stats.spearmanr(xs, ys).statistic)
    ratio = np.log10(xs) - np.log10(ys)
    out["log10_scale"] = float(np.median(ratio))
    out["log10_spread"] = float(np.std(ratio))
    return out


def zeta(learned: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """zeta = sum_i A_ii / H_i, and the effective ranks of the raw and the whitened diagonal."""
    h, a = learned.detach().double().reshape(-1).cpu(), true.detach().double().reshape(-1).cpu().clamp(min=0)
    w = a / h
    return {"zeta": float(w.sum()), "trace": float(a.sum()), "L_d": float(a.max()) * a.numel(),
            "eff_rank": float(a.sum() / a.max()) if float(a.max()) > 0 else math.nan,
            "eff_rank_whitened": float(w.sum() / w.max()) if float(w.max()) > 0 else math.nan}
