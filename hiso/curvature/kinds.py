"""HiSo's curvature (Diagonal) and its shape variants: Identity (DeComFL), LayerScalar, BlockDiagonal, and the
fixed true Hessian (Oracle)."""
from __future__ import annotations

import math

import torch

from ..perturb import flat, head, shaped
from .base import Curvature, CurvatureError, _pad_blocks


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
        r = head(self._tmp, n)
        key = (i, start, n, id(h), h._version)
        if self._tmp_key != key:
            self._fill_inv_sqrt(flat(h)[start:start + n], r)
            self._tmp_key = key
        return u.mul_(shaped(r, u.shape))

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
    config_keys = {"block_size": "block_size"}
    learned = True
    elementwise = False

    @classmethod
    def option_checks(cls, cfg):
        b = cfg.curvature.block_size
        checks = [("block_size", b > 0, "> 0")]
        if cfg.task["name"] == "quadratic":  # other models' sizes are known once they load
            checks.append(("block_size", b <= cfg.task["dim"], f"<= the model's {cfg.task['dim']} parameters"))
        return checks

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
    needs = ("hessian",)

    @classmethod
    def task_args(cls, task) -> tuple:
        return (task.hessian(),)

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
        hessian = self.hessian
        if len(params) == 1 and len(hessian) > 1:  # the flat layout: one buffer for every tensor, in their order
            hessian = [torch.cat([h.reshape(-1) for h in hessian])]
        states = [h.to(p).reshape(p.shape).clone() for h, p in zip(hessian, params, strict=True)]
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
