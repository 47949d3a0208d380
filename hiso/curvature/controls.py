"""Controls and other estimators of H, each isolating one mechanism: RMSProp-ZO (adaptive scaling on isotropic
u), GlobalScalar, SecondDifference, Stein, DampedOracle, Mixed."""
from __future__ import annotations

import math

import torch

from .base import Curvature, CurvatureError
from .kinds import Diagonal, Oracle


class RMSProp(Diagonal):
    """The RMSProp-ZO control: isotropic directions u (no whitening), the same diagonal H learned from the
    log, and the applied update rescaled afterwards: x <- x - lr * H^{-power} Delta x.
    power = 0.5 is RMSProp; power = 1 gives the same expected update as HiSo (H^{-1} grad f) with isotropic
    sampling, isolating what the anisotropic sampling itself contributes."""

    kind = "rmsprop"
    config_keys = {"power": "rmsprop_power"}

    @classmethod
    def option_checks(cls, cfg):
        p = cfg.curvature.rmsprop_power
        return [("rmsprop_power", 0 <= p <= 1, "in [0, 1] (the applied update is H^-power x the step)")]

    def __init__(self, power: float = 0.5, **kw):
        super().__init__(**kw)
        self.power = float(power)

    def precondition_(self, i, u, start=0):
        return u

    def scale_update(self, i, delta, start=0):
        return delta * self._round_h(i, start, delta.numel()).view(delta.shape).pow(-self.power)


class GlobalScalar(Curvature):
    """One number for every coordinate, learned by HiSo's EMA on the mean of Delta x^2 over all d entries.

    The control that separates "a learned step size" from "a learned shape": H = h I only rescales the
    directions, so any gain of Diagonal over GlobalScalar is what the diagonal's shape buys."""

    kind = "global_scalar"
    learned = True

    def _init_state(self, params):
        self._acc: dict[int, list[float]] = {}
        return [torch.ones((), dtype=params[0].dtype, device=params[0].device)]

    def precondition_(self, i, u, start=0):
        return u.mul_(torch.rsqrt(self.state[0]))

    def _feed(self, i, m, step_index, start):  # sum over pieces first; the EMA step happens at the end of the round
        acc = self._acc.setdefault(step_index, [0.0, 0])
        acc[0] += float(m.diag().double().sum())
        acc[1] += m.delta.numel()

    def begin_round(self):
        self._acc = {}

    def end_round(self):
        h = self.state[0]
        for k in sorted(self._acc):
            total, n = self._acc[k]
            h = h * self.beta + (total / n + self.eps) * (1.0 - self.beta)
        self._acc = {}
        self.state = [h]
        self._check(0, h)

    def diagonal(self, i):
        return self.state[0].expand(self.shapes[i])


class SecondDifference(Diagonal):
    """HiZOO's rule on the federated log: clients upload s_j = [f(x+mu z_j) + f(x-mu z_j) - 2 f(x)] / (2 mu^2)
    (central differences, 2P + 1 forward passes, P more scalars per step), the server averages them, and
    every party updates

        H <- beta H + (1 - beta) (H * mean_j |sbar_j| u_j^2 + eps),   u_j = H^{1/2} z_j the raw draws,

    i.e. HiZOO's Sigma^{-1} update with alpha = 1 - beta."""

    kind = "second_difference"
    second_differences = True

    def _ema_(self, h, m, i, start):
        hr = self._round_h(i, start, h.numel())  # the round's H: the directions were drawn with it
        acc = torch.zeros_like(h)
        for s, z in zip(m.second.tolist(), m.zs):
            acc.add_(z.view(h.shape).square().mul_(hr), alpha=abs(s) / len(m.zs))
        acc.mul_(hr).add_(self.eps)  # before h (possibly hr itself) changes
        h.mul_(self.beta).add_(acc, alpha=1.0 - self.beta)


class Stein(Diagonal):
    """An unbiased diagonal estimate from the same second-difference scalars (Stein's identity).

    In whitened coordinates s = (1/2) u^T A~ u with A~ = H^{-1/2} A H^{-1/2}, and E[s (u*u - 1)] = diag(A~) for
    u ~ N(0, I); mapped back, diag(A) = H * diag(A~).  The state M is the EMA of these unbiased (possibly
    negative) samples, M_0 = 1; the directions use H = max(M, floor * RMS(M)), the floor stated in the config
    (an explicit clamp, counted in `clamped_fraction`), because a single sample is not positive."""

    kind = "stein"
    config_keys = {"floor": "floor"}
    second_differences = True
    positive_state = False  # M may be negative (an unbiased estimate): only finiteness is checked

    @classmethod
    def option_checks(cls, cfg):
        f = cfg.curvature.floor
        return [("floor", 0 < f < math.inf, "> 0 and finite")]

    def __init__(self, floor: float = 1e-3, **kw):
        super().__init__(**kw)
        if not floor > 0:
            raise ValueError(f"curvature.floor must be > 0, got {floor}")
        self.floor = float(floor)
        self.floor_value = 0.0
        self.clamped_fraction = 0.0

    def used(self, i: int) -> torch.Tensor:
        return self.state[i].clamp(min=self.floor_value)

    def _fill_inv_sqrt(self, h, out):  # floor_value changes only with the state (end_round / load): cache-safe
        torch.clamp(h, min=self.floor_value, out=out).rsqrt_()

    def _ema_(self, h, m, i, start):
        hr = self._round_h(i, start, h.numel()).clamp(min=self.floor_value)  # the H the directions used
        sample = torch.zeros_like(h)
        for s, z in zip(m.second.tolist(), m.zs):  # u^2 - 1 = H z^2 - 1
            sample.add_(z.view(h.shape).square().mul_(hr).sub_(1.0), alpha=s / len(m.zs))
        sample.mul_(hr)
        h.mul_(self.beta).add_(sample, alpha=1.0 - self.beta)

    def _check(self, i, h):
        if h.numel() and bool(self._invalid(h)):
            raise CurvatureError(f"stein curvature of tensor {i} has non-finite entries; lower federation.lr/mu")

    def _refresh(self, states):
        sq = sum(float(s.double().square().sum()) for s in states)
        n = sum(s.numel() for s in states)
        self.floor_value = self.floor * math.sqrt(sq / n)
        self.clamped_fraction = sum(int((s < self.floor_value).sum()) for s in states) / n

    def diagonal(self, i):
        return self.used(i)


class DampedOracle(Oracle):
    """The true Hessian diagonal plus delta * lambda_max (synthetic problems): exact whitening can hurt when
    the effective rank is low, damping interpolates towards DeComFL's isotropic directions."""

    kind = "damped_oracle"
    config_keys = {"damping": "damping"}
    needs = ("hessian_diagonal", "lambda_max")

    @classmethod
    def task_args(cls, task) -> tuple:
        return (task.hessian_diagonal(), task.lambda_max())

    @classmethod
    def option_checks(cls, cfg):
        d = cfg.curvature.damping
        return [("damping", 0 <= d < math.inf, ">= 0 and finite")]

    def __init__(self, diagonal: list[torch.Tensor], lambda_max: float, damping: float = 0.1, **kw):
        if not damping >= 0:
            raise ValueError(f"curvature.damping must be >= 0, got {damping}")
        self.damping, self.lambda_max = float(damping), float(lambda_max)
        super().__init__([d + self.damping * self.lambda_max for d in diagonal], **kw)


class Mixed(Diagonal):
    """HiSo's diagonal shrunk towards its own mean: H = (1 - w) M + w mean(M), M learned by HiSo's EMA.

    w = 0 is HiSo, w = 1 a single learned number (GlobalScalar's role, from the diagonal's mean): the mixing
    option between a learned shape and a learned step size. mean(M) is taken over all d entries of the state
    at the start of the round (after each end_round / load), so every party uses the same value; no extra
    forward passes or bytes."""

    kind = "mixed"
    config_keys = {"mix": "mix"}

    @classmethod
    def option_checks(cls, cfg):
        m = cfg.curvature.mix
        return [("mix", 0 <= m <= 1, "in [0, 1]")]

    def __init__(self, mix: float = 0.5, **kw):
        super().__init__(**kw)
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"curvature.mix must be in [0, 1], got {mix}")
        self.mix = float(mix)
        self.mean_value = 1.0

    def _fill_inv_sqrt(self, h, out):  # mean_value changes only with the state (end_round / load): cache-safe
        torch.mul(h, 1.0 - self.mix, out=out).add_(self.mix * self.mean_value).rsqrt_()

    def _refresh(self, states):
        self.mean_value = sum(float(s.double().sum()) for s in states) / sum(s.numel() for s in states)

    def diagonal(self, i):
        return self.state[i] * (1.0 - self.mix) + self.mix * self.mean_value
