"""The curvature base class and what every kind shares: the moment of a round's update, Gram matrices of
client scalars, block padding, and CurvatureError."""
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
    positive_state: ClassVar[bool] = True  # the validity check requires entries > 0 (not for Stein's signed M)
    # True: every client also uploads P second differences per local step (2P + 1 forward passes per step),
    # the server averages them into the log record, and every party updates H from them.
    second_differences: ClassVar[bool] = False
    # The kind's own options: constructor argument -> key of the config's `curvature:` section.
    config_keys: ClassVar[dict[str, str]] = {}
    # Task methods the kind needs (e.g. the true Hessian); a config whose task lacks one is refused.
    needs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def option_checks(cls, cfg) -> list[tuple[str, bool, str]]:
        """(key of `curvature:`, holds, what it must be) for each of the kind's own options, given the whole
        config; the config refuses a failed one before anything runs.  Only the chosen kind's checks run; another
        kind's option set to a non-default value is named in a warning (hiso.curvature.config_problem)."""
        return []

    @classmethod
    def task_args(cls, task) -> tuple:
        """Positional constructor arguments taken from the task (e.g. its Hessian)."""
        return ()

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
                self._flag(piece)
        elif self._staged is None:
            self.state[i] = self._ema(self.state[i], m, i)
            self._flag(self.state[i])
        else:
            cur = self._staged.get(i, self.state[i])
            self._staged[i] = self._ema(cur, m, i)

    def end_round(self) -> None:
        self._tmp_key = None
        if self._staged:
            for i, s in self._staged.items():
                self.state[i] = s
                self._flag(s)
        self._staged = None
        self._raise_if_flagged()
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

    def _invalid(self, h: torch.Tensor) -> torch.Tensor:
        """A device bool: does this part of the state hold an unusable entry?  One pass, no host sync."""
        return _bad_range(*torch.aminmax(h), self.positive_state and h.dim() < 3)

    def _flag(self, h: torch.Tensor) -> None:
        """Keep the range of an updated piece on the device; `end_round` reads the ranges once: one host sync per
        round's update, and one reduction (aminmax) per piece, not two syncs per piece."""
        if h.numel() == 0:
            return
        if getattr(self, "_ranges", None) is None:
            self._ranges = {True: [], False: []}
        self._ranges[self.positive_state and h.dim() < 3].append(torch.aminmax(h))

    def _raise_if_flagged(self) -> None:
        ranges, self._ranges = getattr(self, "_ranges", None), None
        if not ranges:
            return
        bad = [_bad_range(torch.stack([lo for lo, _ in r]).min(), torch.stack([hi for _, hi in r]).max(), positive)
               for positive, r in ranges.items() if r]
        if bad and bool(torch.stack(bad).any()):
            for i, h in enumerate(self.state):  # name the first unusable tensor, as the per-piece check did
                self._check(i, h)

    def _check(self, i: int, h: torch.Tensor) -> None:
        if h.numel() == 0 or not bool(self._invalid(h)):
            return
        bad = ~torch.isfinite(h) | (h <= 0) if h.dim() < 3 else ~torch.isfinite(h)
        if bool(bad.any()):
            raise CurvatureError(
                f"{self.kind} curvature of tensor {i} has {int(bad.sum())} non-positive or non-finite entries "
                f"(min {float(h.min()):.3g}); the run cannot continue (try eps > 0 or a smaller learning rate)")

    # --- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"kind": self.kind, "state": list(self.state)}  # references: saved at once (Federation.state_dict)

    def load_state_dict(self, sd: dict) -> None:
        if sd["kind"] != self.kind:
            raise ValueError(f"checkpoint holds {sd['kind']} curvature, config asks for {self.kind}")
        # a checkpoint is read onto the CPU (map_location): each state goes to the device of the state it replaces
        self.state = [s.to(old.device, copy=True) for s, old in zip(sd["state"], self.state, strict=True)]
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


def _bad_range(lo: torch.Tensor, hi: torch.Tensor, positive: bool) -> torch.Tensor:
    """A device bool from a state's range: a NaN or an infinity (min/max propagate NaN), or, where the state must be
    positive (diagonal and per-tensor H; block states' eigenvalues are checked where they are factorised), an entry
    <= 0."""
    bad = ~torch.isfinite(lo) | ~torch.isfinite(hi)
    return bad | (lo <= 0) if positive else bad
