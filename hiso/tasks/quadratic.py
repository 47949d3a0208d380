"""Synthetic federated quadratic with a chosen spectrum and heterogeneous client optima.

    f_i(x) = 1/2 (x - c_i)^T A (x - c_i),   f = mean_i f_i,   x* = mean_i c_i,   x_0 = 0.

A = Q diag(lambda) Q^T with Q = I (axis-aligned: a diagonal H can represent A exactly) or a random rotation.
Spectra: "power" (lambda_k = L k^-a, a solved so that the effective rank kappa = Tr(A)/lambda_max is the one
asked for) or "lognormal" (lambda = exp(sigma N(0,1)), rescaled so that lambda_max = L).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import streams


@dataclass
class QuadraticOptions:
    dim: int = 1000
    spectrum: str = "power"  # power | lognormal
    effective_rank: float = 10.0  # power spectrum: Tr(A) / lambda_max
    sigma: float = 1.5  # lognormal spectrum: log-std of the eigenvalues
    lipschitz: float = 1.0  # lambda_max
    heterogeneity: float = 0.3  # std of each client's optimum around the shared one
    rotate: bool = False  # random orthogonal eigenbasis (dense A; needs dim <= 4000)


def power_exponent(dim: int, kappa: float) -> float:
    """The a with sum_{k<=dim} k^-a = kappa (bisection; the sum decreases in a)."""
    if not 1.0 <= kappa <= dim:
        raise ValueError(f"effective_rank must be in [1, dim={dim}], got {kappa}")
    k = np.arange(1, dim + 1, dtype=np.float64)
    lo, hi = 0.0, 64.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (k ** -mid).sum() > kappa:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def spectrum(opts: QuadraticOptions, rng: np.random.Generator) -> np.ndarray:
    """Eigenvalues, float64, max = lipschitz."""
    if opts.spectrum == "power":
        lam = np.arange(1, opts.dim + 1, dtype=np.float64) ** -power_exponent(opts.dim, opts.effective_rank)
        lam = rng.permutation(lam)
    elif opts.spectrum == "lognormal":
        lam = np.exp(opts.sigma * rng.standard_normal(opts.dim))
    else:
        raise ValueError(f"unknown spectrum {opts.spectrum!r}; choose power or lognormal")
    return opts.lipschitz * lam / lam.max()


class Quadratic:
    Options = QuadraticOptions
    metric = "rel_suboptimality"
    higher_is_better = False
    directions = {"suboptimality": False}

    @staticmethod
    def memory_bytes(o: QuadraticOptions, num_clients: int) -> int:
        """The clients' optima (float64, num_clients x dim) and a dense eigenbasis when rotated."""
        return 8 * o.dim * (num_clients + 4) + (8 * o.dim * o.dim if o.rotate else 0)

    @classmethod
    def check_options(cls, o: QuadraticOptions) -> None:
        from ..checks import finite_positive, require
        require("task.dim", o.dim, 1 <= o.dim <= 50_000_000, "in [1, 50,000,000]")
        require("task.spectrum", o.spectrum, o.spectrum in ("power", "lognormal"), "power or lognormal")
        require("task.effective_rank", o.effective_rank, 1 <= o.effective_rank <= o.dim, f"in [1, dim={o.dim}]")
        require("task.sigma", o.sigma, 0 <= o.sigma < math.inf, "finite and >= 0")
        finite_positive("task.lipschitz", o.lipschitz)
        require("task.heterogeneity", o.heterogeneity, 0 <= o.heterogeneity < math.inf, "finite and >= 0")
        require("task.rotate", o.rotate, not o.rotate or o.dim <= 4000, f"false for dim {o.dim} > 4000 (dense A)")

    def __init__(self, opts: QuadraticOptions, num_clients: int, seed: int):
        if opts.dim < 1:
            raise ValueError(f"task.dim must be >= 1, got {opts.dim}")
        if opts.rotate and opts.dim > 4000:
            raise ValueError("task.rotate needs a dense dim x dim matrix; use dim <= 4000")
        rng = streams.rng(seed, streams.QUADRATIC)
        self.opts, self.num_clients = opts, num_clients
        self.lam = spectrum(opts, rng)
        self.q = np.linalg.qr(rng.standard_normal((opts.dim, opts.dim)))[0] if opts.rotate else None
        center = rng.standard_normal(opts.dim)
        self.optima = center + opts.heterogeneity * rng.standard_normal((num_clients, opts.dim))
        self.x_star = self.optima.mean(0)
        self.x = torch.nn.Parameter(torch.zeros(opts.dim), requires_grad=False)
        self._lam_t = torch.tensor(self.lam, dtype=torch.float32)
        self._c_t = torch.tensor(self.optima, dtype=torch.float32)
        self._q_t = None if self.q is None else torch.tensor(self.q, dtype=torch.float32)
        self.f_star = self._f64(self.x_star)
        self.f_0 = self._f64(np.zeros(opts.dim))

    def _f64(self, x: np.ndarray) -> float:
        y = x[None, :] - self.optima
        if self.q is not None:
            y = y @ self.q
        return float(0.5 * (y * y * self.lam).sum(1).mean())

    def params(self) -> list[torch.Tensor]:
        return [self.x]

    def batch(self, client: int, rng: np.random.Generator, size: int) -> int:
        return client  # deterministic per-client objective

    @torch.no_grad()
    def loss(self, client: int) -> float:
        y = self.x - self._c_t[client]
        if self._q_t is not None:
            y = y @ self._q_t
        return float(0.5 * (y * y * self._lam_t).sum())

    def grad_loss(self, client: int) -> torch.Tensor:
        """Differentiable loss (first-order baselines)."""
        y = self.x - self._c_t[client]
        if self._q_t is not None:
            y = y @ self._q_t
        return 0.5 * (y * y * self._lam_t).sum()

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Suboptimality of the current point; the same for every split (no data: a held-out instance, i.e.
        another seed, is the quadratic's validation)."""
        sub = self._f64(self.x.detach().double().numpy()) - self.f_star
        return {"suboptimality": sub, "rel_suboptimality": sub / (self.f_0 - self.f_star)}

    def hessian_matrix(self) -> np.ndarray:
        return self.q @ np.diag(self.lam) @ self.q.T if self.q is not None else np.diag(self.lam)

    def hessian_diagonal(self) -> list[torch.Tensor]:
        diag = (self.q ** 2) @ self.lam if self.q is not None else self.lam
        return [torch.tensor(diag, dtype=torch.float32)]

    def lambda_max(self) -> float:
        return float(self.lam.max())

    def hessian(self) -> torch.Tensor | list[torch.Tensor]:
        """The oracle curvature: dense when rotated, else the (exact) diagonal."""
        if self.q is not None:
            return torch.tensor(self.hessian_matrix(), dtype=torch.float32)
        return self.hessian_diagonal()
