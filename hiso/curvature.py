"""Curvature states H, rebuilt by every party from the round log alone (never sent).

Each curvature object maps a standard normal direction u to z = H^{-1/2} u, tensor by tensor, and updates
itself from the aggregated update of a round.  Identity gives DeComFL; Diagonal gives HiSo (paper Eq. 12):

    H_{r+1} = beta * H_r + (1 - beta) * (Delta x_r ** 2 + eps),   H_0 = 1.

`moment` picks what "Delta x ** 2" means (HISO.md section 3):
- "square_of_mean" (default, the authors' code): the square of the aggregated update (needs only g-bar);
- "mean_of_squares" (paper Eq. 12): the average over clients of each client's squared update, rebuilt from
  the P x P Gram matrix of client scalars that the server adds to the log (P(P+1)/2 extra scalars per step).
`feed` picks which local steps feed the EMA: "last" (default) or "every" (one EMA step per local step, all
computed with the round's H, so local steps never change H).
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch


class CurvatureError(RuntimeError):
    """The curvature state became unusable (non-positive or non-finite entries)."""


def gram_upper(per_client: np.ndarray) -> np.ndarray:
    """Mean over clients of g g^T for each step, upper triangle flattened: [steps, P(P+1)/2] float32.

    per_client: [clients, steps, P] scalars.
    """
    g = per_client.astype(np.float64)
    gram = np.einsum("csp,csq->spq", g, g) / g.shape[0]
    iu = np.triu_indices(g.shape[2])
    return gram[:, iu[0], iu[1]].astype(np.float32)


def gram_full(upper: np.ndarray, num: int) -> torch.Tensor:
    """Symmetric P x P matrix from its flattened upper triangle."""
    m = np.zeros((num, num), dtype=np.float32)
    iu = np.triu_indices(num)
    m[iu] = upper
    m[(iu[1], iu[0])] = upper
    return torch.from_numpy(m)


class Moment:
    """The second moment of one tensor's update that feeds the EMA: delta delta^T, or sum G_jk z_j z_k^T / P^2."""

    def __init__(self, delta: torch.Tensor, zs: list[torch.Tensor] | None = None, gram: torch.Tensor | None = None,
                 second: torch.Tensor | None = None):
        # second: the P aggregated second differences of the step (second-difference curvatures), float64
        self.delta, self.zs, self.gram, self.second = delta, zs, gram, second

    def _stack(self) -> torch.Tensor:
        return torch.stack([z.reshape(-1) for z in self.zs])  # [P, n]

    def diag(self) -> torch.Tensor:
        if self.zs is None:
            return self.delta.reshape(-1).square()
        z = self._stack()
        return ((self.gram.to(z) @ z) * z).sum(0) / z.shape[0] ** 2

    def blocks(self, b: int) -> torch.Tensor:
        """[nblocks, b, b] outer products over consecutive blocks of b entries (zero-padded)."""
        if self.zs is None:
            v = _pad_blocks(self.delta.reshape(-1), b)  # [nb, b]
            return v.unsqueeze(2) * v.unsqueeze(1)
        z = torch.stack([_pad_blocks(x.reshape(-1), b) for x in self.zs])  # [P, nb, b]
        gz = torch.einsum("jk,kab->jab", self.gram.to(z), z)
        return torch.einsum("jab,jac->abc", gz, z) / z.shape[0] ** 2


def _pad_blocks(v: torch.Tensor, b: int) -> torch.Tensor:
    nb = math.ceil(v.numel() / b)
    if nb * b == v.numel():
        return v.view(nb, b)
    out = v.new_zeros(nb * b)
    out[: v.numel()] = v
    return out.view(nb, b)


class Curvature:
    """Base class.  Subclasses define `precondition_` and, if learned, `_update(i, moment)` and state."""

    kind: ClassVar[str] = "base"
    learned: ClassVar[bool] = False
    _tmp_key = None  # cache key of a precomputed H^{-1/2} (Diagonal); reset whenever the state is replaced
    # True: precondition_, scale_update and the EMA act entry by entry, so directions may be drawn and applied
    # in pieces of a few MiB (perturb.CHUNK) instead of whole tensors (the scratch memory stays that small).
    elementwise: ClassVar[bool] = True
    # True: every client also uploads P second differences per local step (2P + 1 forward passes per step),
    # the server averages them into the log record, and every party updates H from them.
    second_differences: ClassVar[bool] = False

    def __init__(self, beta: float = 0.95, eps: float = 1e-8, feed: str = "last", moment: str = "square_of_mean"):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"curvature.beta must be in [0, 1), got {beta}")
        if eps < 0:
            raise ValueError(f"curvature.eps must be >= 0, got {eps}")
        self.beta, self.eps, self.feed, self.moment = float(beta), float(eps), feed, moment
        self._staged: dict[int, torch.Tensor] | None = None

    # --- set-up -------------------------------------------------------------------------------------
    def bind(self, params: list[torch.Tensor]) -> Curvature:
        """Allocate the state for these tensors (H_0)."""
        self.shapes = [p.shape for p in params]
        self.state: list[torch.Tensor] = self._init_state(params)
        return self

    def _init_state(self, params):
        return []

    # --- use ----------------------------------------------------------------------------------------
    def precondition_(self, i: int, u: torch.Tensor, start: int = 0) -> torch.Tensor:
        """z = H^{-1/2} u for the flat entries [start, start + u.numel()) of tensor i (in place where possible;
        a whole tensor, start 0, unless `elementwise`); returns z."""
        raise NotImplementedError

    def scale_update(self, i: int, delta: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The update actually applied to those entries of tensor i (identity: x <- x - lr * delta)."""
        return delta

    # --- update from the log ------------------------------------------------------------------------
    def feeds(self, k: int, tau: int) -> bool:
        """Does local step k (of tau) feed the curvature EMA?"""
        return self.learned and (self.feed == "every" or k == tau - 1)

    @property
    def needs_directions(self) -> bool:
        return self.learned and (self.moment == "mean_of_squares" or self.second_differences)

    def upload_extra(self, tau: int, num: int) -> int:
        """Scalars a client uploads beside its tau x P directional derivatives (never depends on d)."""
        return tau * num if self.second_differences else 0

    def record_extra(self, tau: int, num: int) -> int:
        """Scalars the server adds to each log record."""
        feeding = sum(self.feeds(k, tau) for k in range(tau))
        if self.second_differences:
            return feeding * num
        return feeding * num * (num + 1) // 2 if self.needs_directions else 0

    def extra_scalars(self, per_client: np.ndarray, per_client_extra: np.ndarray | None = None) -> np.ndarray:
        """Scalars the server adds to the log record from the clients' uploads: [clients, tau, P] scalars and
        [clients, upload_extra] extras -> float32 [record_extra]."""
        tau, num = per_client.shape[1], per_client.shape[2]
        steps = [k for k in range(tau) if self.feeds(k, tau)]
        if self.second_differences:  # the clients' mean second difference of each feeding step
            s = per_client_extra.reshape(-1, tau, num)[:, steps, :].astype(np.float64).mean(0)
            return s.astype(np.float32).reshape(-1)
        if not self.needs_directions:
            return np.zeros(0, dtype=np.float32)
        return gram_upper(per_client[:, steps, :]).reshape(-1)

    def rms_inv_sqrt(self) -> float:
        """sqrt(mean_i 1 / H_ii): the RMS of the whitening H^{-1/2} (mu scaling keeps |mu z| ~ mu |u|)."""
        total, n = 0.0, 0
        for i in range(len(self.shapes)):
            h = self.diagonal(i).double()
            total += float(h.reciprocal().sum())
            n += h.numel()
        return math.sqrt(total / n)

    def begin_round(self) -> None:
        # feed="every": EMA steps go to a staged copy so that the round's later steps still use H_r
        self._staged = {} if (self.learned and self.feed == "every") else None

    def observe(self, i: int, delta: torch.Tensor, zs, extra: np.ndarray | None, step_index: int,
                start: int = 0) -> None:
        """Feed the update of flat entries [start, start + delta.numel()) of tensor i in one feeding step
        (step_index counts feeding steps of this round)."""
        gram = second = None
        if self.second_differences:
            num = len(zs)
            second = torch.from_numpy(extra[step_index * num:(step_index + 1) * num].astype(np.float64))
        elif self.needs_directions:
            num = len(zs)
            tri = num * (num + 1) // 2
            gram = gram_full(extra[step_index * tri:(step_index + 1) * tri], num)
        self._feed(i, Moment(delta, zs, gram, second), step_index, start)

    def _feed(self, i: int, m: Moment, step_index: int, start: int) -> None:
        if self.elementwise:  # in place on the piece; feed="every" works on a staged copy of the round's H
            target = self.state[i] if self._staged is None else self._staged.setdefault(i, self.state[i].clone())
            piece = target.view(-1)[start:start + m.delta.numel()]
            self._ema_(piece, m, i, start)
            if self._staged is None:
                self._check(i, piece)
        elif self._staged is None:
            self.state[i] = self._ema(self.state[i], m, i)
            self._check(i, self.state[i])
        else:
            cur = self._staged.get(i, self.state[i])
            self._staged[i] = self._ema(cur, m, i)

    def end_round(self) -> None:
        self._tmp_key = None
        if self._staged:
            for i, s in self._staged.items():
                self.state[i] = s
                self._check(i, s)
        self._staged = None
        self._after_update()

    def _ema(self, h: torch.Tensor, m: Moment, i: int) -> torch.Tensor:
        """Whole-tensor EMA step (kinds that are not elementwise): returns the new state of tensor i."""
        raise NotImplementedError

    def _ema_(self, h: torch.Tensor, m: Moment, i: int, start: int) -> None:
        """Elementwise EMA step in place on h, the flat entries [start, start + h.numel()) of the state of
        tensor i (of the staged copy under feed="every"; self.state still holds the round's H)."""
        raise NotImplementedError

    def _round_h(self, i: int, start: int, n: int) -> torch.Tensor:
        """Flat entries [start, start + n) of the round's H of tensor i (the directions were drawn with it)."""
        return self.state[i].view(-1)[start:start + n]

    def _after_update(self) -> None:
        pass

    def _check(self, i: int, h: torch.Tensor) -> None:
        # one pass without temporaries (min/max propagate NaN); the count is computed only for the message
        if h.numel() == 0:
            return
        if h.dim() < 3:
            lo, hi = torch.aminmax(h)
            if bool(lo > 0) and bool(torch.isfinite(hi)):
                return
        bad = ~torch.isfinite(h) | (h <= 0) if h.dim() < 3 else ~torch.isfinite(h)
        if bool(bad.any()):
            raise CurvatureError(
                f"{self.kind} curvature of tensor {i} has {int(bad.sum())} non-positive or non-finite entries "
                f"(min {float(h.min()):.3g}); the run cannot continue (try eps > 0 or a smaller learning rate)")

    # --- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"kind": self.kind, "state": [s.clone() for s in self.state]}

    def load_state_dict(self, sd: dict) -> None:
        if sd["kind"] != self.kind:
            raise ValueError(f"checkpoint holds {sd['kind']} curvature, config asks for {self.kind}")
        self.state = [s.clone() for s in sd["state"]]
        self._tmp_key = None
        for i, s in enumerate(self.state):
            self._check(i, s)
        self._after_update()

    def equals(self, other: Curvature) -> bool:
        """Bitwise equality of the states (the replay-exactness check)."""
        return self.kind == other.kind and len(self.state) == len(other.state) and all(
            torch.equal(a, b) for a, b in zip(self.state, other.state))

    def flat(self) -> torch.Tensor:
        """The learned diagonal (or its expansion) as one vector, for histograms and diagnostics."""
        return torch.cat([self.diagonal(i).reshape(-1) for i in range(len(self.shapes))])

    def diagonal(self, i: int) -> torch.Tensor:
        return torch.ones(self.shapes[i])


class Identity(Curvature):
    """H = I: plain ZO-SGD directions (DeComFL)."""

    kind = "identity"

    def precondition_(self, i, u, start=0):
        return u


class Diagonal(Curvature):
    """HiSo's diagonal H (one entry per parameter; one extra d-vector of memory)."""

    kind = "diagonal"
    learned = True

    def _init_state(self, params):
        self._tmp = torch.empty(0, dtype=params[0].dtype, device=params[0].device)
        self._tmp_key = None
        states = [torch.ones_like(p) for p in params]
        self._refresh(states)
        return states

    def _after_update(self):
        self._refresh(self.state)

    def _refresh(self, states: list[torch.Tensor]) -> None:
        """Kinds whose directions also use a statistic of the whole state (Stein's floor, Mixed's mean)
        recompute it here: at binding and after every end_round / load, so every party holds the same value."""

    def precondition_(self, i, u, start=0):
        # H^{-1/2} of the piece is kept in one scratch buffer (one piece, never d) and recomputed only when
        # the piece or its H changed: a replayed or local update draws the P directions of a piece back to
        # back, so this is one rsqrt per piece and step instead of P.
        n = u.numel()
        h = self.state[i]
        if self._tmp.numel() < n:
            self._tmp = torch.empty(n, dtype=h.dtype, device=h.device)
            self._tmp_key = None
        r = self._tmp[:n]
        key = (i, start, n, id(h), h._version)
        if self._tmp_key != key:
            self._fill_inv_sqrt(h.view(-1)[start:start + n], r)
            self._tmp_key = key
        return u.mul_(r.view(u.shape))

    def _fill_inv_sqrt(self, h: torch.Tensor, out: torch.Tensor) -> None:
        torch.rsqrt(h, out=out)

    def _ema_(self, h, m, i, start):
        if m.zs is None:  # square of the mean: H <- beta H + (1 - beta) (delta^2 + eps), without a temporary
            d = m.delta.view(h.shape)
            h.mul_(self.beta).addcmul_(d, d, value=1.0 - self.beta).add_((1.0 - self.beta) * self.eps)
        else:
            h.mul_(self.beta).add_(m.diag().view(h.shape).add_(self.eps), alpha=1.0 - self.beta)

    def diagonal(self, i):
        return self.state[i]


class LayerScalar(Curvature):
    """One curvature value per parameter tensor (block-constant H)."""

    kind = "layer_scalar"
    learned = True
    elementwise = False  # the EMA needs the mean over the whole tensor

    def _init_state(self, params):
        return [torch.ones((), dtype=params[0].dtype, device=params[0].device) for _ in params]

    def precondition_(self, i, u, start=0):
        return u.mul_(torch.rsqrt(self.state[i]))

    def _ema(self, h, m, i):
        return h * self.beta + (m.diag().mean() + self.eps) * (1.0 - self.beta)

    def diagonal(self, i):
        return self.state[i].expand(self.shapes[i])


class BlockDiagonal(Curvature):
    """Dense b x b blocks over consecutive entries of each tensor: EMA of Delta Delta^T restricted to blocks.

    H^{-1/2} per block by eigendecomposition after every update; state 2 * d * b floats (H and H^{-1/2}).
    """

    kind = "block_diagonal"
    learned = True
    elementwise = False

    def __init__(self, block_size: int = 8, **kw):
        super().__init__(**kw)
        if block_size < 1:
            raise ValueError(f"curvature.block_size must be >= 1, got {block_size}")
        self.b = int(block_size)

    def _init_state(self, params):
        eye = torch.eye(self.b, dtype=params[0].dtype, device=params[0].device)
        states = [eye.repeat(math.ceil(p.numel() / self.b), 1, 1) for p in params]
        self._inv_sqrt = [s.clone() for s in states]
        return states

    def precondition_(self, i, u, start=0):
        n = u.numel()
        v = _pad_blocks(u.reshape(-1), self.b)  # [nb, b]
        z = torch.bmm(self._inv_sqrt[i], v.unsqueeze(2)).reshape(-1)[:n]
        return u.copy_(z.view(u.shape))

    def _ema(self, h, m, i):
        eye = torch.eye(self.b, dtype=h.dtype, device=h.device)
        return h * self.beta + (m.blocks(self.b) + self.eps * eye) * (1.0 - self.beta)

    def _after_update(self):
        self._inv_sqrt = []
        for i, h in enumerate(self.state):
            lam, vec = torch.linalg.eigh(h)
            if bool((lam <= 0).any()) or not bool(torch.isfinite(lam).all()):
                raise CurvatureError(f"block_diagonal curvature of tensor {i} is not positive definite "
                                     f"(min eigenvalue {float(lam.min()):.3g})")
            self._inv_sqrt.append((vec * lam.rsqrt().unsqueeze(1)) @ vec.transpose(1, 2))

    def diagonal(self, i):
        d = torch.diagonal(self.state[i], dim1=1, dim2=2).reshape(-1)
        return d[: math.prod(self.shapes[i])].view(self.shapes[i])


class Oracle(Curvature):
    """A given curvature (synthetic problems): a diagonal per tensor, or one dense matrix for a single tensor."""

    kind = "oracle"

    def __init__(self, hessian: list[torch.Tensor] | torch.Tensor, **kw):
        super().__init__(**kw)
        self.hessian = hessian

    def _init_state(self, params):
        if isinstance(self.hessian, torch.Tensor):  # dense matrix for a single flat tensor
            if len(params) != 1 or self.hessian.shape != (params[0].numel(),) * 2:
                raise ValueError("a dense oracle Hessian needs exactly one parameter tensor of matching size")
            lam, vec = torch.linalg.eigh(self.hessian.to(torch.float64))
            if bool((lam <= 0).any()):
                raise CurvatureError(f"oracle Hessian is not positive definite (min eigenvalue {float(lam.min()):.3g})")
            self._dense = ((vec * lam.rsqrt()) @ vec.T).to(params[0].dtype)
            self.elementwise = False
            return [self.hessian.diagonal().clone()]
        self._dense = None
        states = [h.to(p).reshape(p.shape).clone() for h, p in zip(self.hessian, params, strict=True)]
        for i, s in enumerate(states):
            self._check(i, s)
        self._rsqrt = [s.rsqrt() for s in states]
        return states

    def precondition_(self, i, u, start=0):
        if self._dense is not None:
            return u.copy_((self._dense @ u.reshape(-1)).view(u.shape))
        return u.mul_(self._rsqrt[i].view(-1)[start:start + u.numel()].view(u.shape))

    def diagonal(self, i):
        return self.state[i]


class RMSProp(Diagonal):
    """The RMSProp-ZO control: isotropic directions u (no whitening), the same diagonal H learned from the
    log, and the applied update rescaled afterwards: x <- x - lr * H^{-power} Delta x.
    power = 0.5 is RMSProp; power = 1 gives the same expected update as HiSo (H^{-1} grad f) with isotropic
    sampling, isolating what the anisotropic sampling itself contributes."""

    kind = "rmsprop"

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
    second_differences = True

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
        lo, hi = torch.aminmax(h)  # NaN propagates
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
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


KINDS = {c.kind: c for c in (Identity, Diagonal, LayerScalar, BlockDiagonal, Oracle, RMSProp, GlobalScalar,
                             SecondDifference, Stein, DampedOracle, Mixed)}


def make_factory(c, task):
    """params -> bound curvature object, from the config's `curvature:` section (a CurvatureConfig)."""
    cls = KINDS[c.kind]
    common = dict(beta=c.beta, eps=c.eps, feed=c.feed, moment=c.moment)
    if c.kind == "oracle":
        hess = task.hessian()
        return lambda params: cls(hess, **common).bind(params)
    if c.kind == "block_diagonal":
        return lambda params: cls(block_size=c.block_size, **common).bind(params)
    if c.kind == "rmsprop":
        return lambda params: cls(power=c.rmsprop_power, **common).bind(params)
    if c.kind == "stein":
        return lambda params: cls(floor=c.floor, **common).bind(params)
    if c.kind == "mixed":
        return lambda params: cls(mix=c.mix, **common).bind(params)
    if c.kind == "damped_oracle":
        diag, lmax = task.hessian_diagonal(), task.lambda_max()
        return lambda params: cls(diag, lmax, damping=c.damping, **common).bind(params)
    return lambda params: cls(**common).bind(params)
