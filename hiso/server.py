"""The server's side of scalar-only federated ZO (docs/algorithm.md): the round log, upload validation and
aggregation, and the replay rule every party applies (`apply_record`).

HiSo's model and curvature updates happen in `apply_record` alone: the server applies each round's record
with it, and every client catches up by applying the records it missed with the same function, so replay
reproduces the server's model and curvature on every client.  With H = I (hiso.curvature.Identity) it is
DeComFL's update.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .aggregators import AGGREGATORS
from .curvature import Curvature
from .perturb import Scratch, StepDirections, step_
from .protocol import ProtocolError, RoundRecord, RoundStart, Upload

log = logging.getLogger("hiso.federation")


@torch.no_grad()
def apply_record(params: list[torch.Tensor], curvature: Curvature, rec: RoundRecord, lr: float,
                 scratch: Scratch, weight_decay: float = 0.0) -> None:
    """Replay one round of the log: the model update of every local step, then the curvature update.

    x <- x - lr * sum_k (1/P) sum_j gbar_{k,j} z_{k,j}, with every z drawn under the round's H; no forward pass
    (with weight decay, each local step is x <- x - lr * (delta_k + weight_decay * x); H never sees that term).
    The server and every catching-up client call exactly this function.
    """
    if rec.n_accepted == 0:
        return
    tau, num = rec.scalars.shape
    curvature.begin_round()
    fed = 0
    for k in range(tau):
        observe = None
        if curvature.feeds(k, tau):
            observe = (lambda i, start, delta, zs, idx=fed: curvature.observe(i, delta, zs, rec.extra, idx, start))
            fed += 1
        dirs = StepDirections(int(rec.seeds[k]), num, params, curvature, scratch)
        step_(params, dirs, rec.scalars[k] / np.float32(num), lr, observe, curvature.needs_directions, weight_decay)
    curvature.end_round()


@dataclass
class Wire:
    """Measured bytes of one round, summed over the sampled clients."""

    up: int = 0
    up_scalars: int = 0
    down: int = 0
    down_seeds: int = 0
    down_catchup: int = 0

    def add_down(self, msg: RoundStart, data: bytes) -> None:
        sizes = msg.sizes()
        self.down += len(data)
        self.down_seeds += sizes["seeds"]
        self.down_catchup += sizes["catch_up"]

    def add_up(self, data: bytes) -> None:
        """The bytes that arrived; their scalars count when they decode (none from a dropped client or an
        undecodable upload), whichever engine carried them."""
        self.up += len(data)
        try:
            up = Upload.decode(data) if data else None
        except ProtocolError:
            up = None
        if up is not None:
            self.up_scalars += 4 * (up.scalars.size + up.extra.size)


@dataclass
class Server:
    """Holds the global model, its curvature and the round log; validates and aggregates uploads."""

    params: list[torch.Tensor]
    curvature: Curvature
    lr: float
    local_steps: int
    perturbations: int
    aggregator: str = "mean"
    trim_fraction: float = 0.1
    max_abs_scalar: float = 1e6
    weight_decay: float = 0.0
    clip_factor: float = 3.0
    chunk: int | None = None  # the pieces directions are drawn in (hiso/layout.py; None: perturb.CHUNK)
    generator: str = "native"  # perturb.GENERATORS
    log: list[RoundRecord] = field(default_factory=list)

    def __post_init__(self):
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {self.aggregator!r}; choose one of {list(AGGREGATORS)}")
        self.scratch = Scratch(self.params, self.chunk, self.generator)
        self._round = None

    def open_round(self, r: int, seeds: np.ndarray, sampled: list[int]) -> None:
        if r != len(self.log):
            raise ProtocolError(f"round {r} opened but the log holds {len(self.log)} rounds")
        self._round, self._seeds, self._sampled = r, seeds, set(sampled)
        self._uploads: dict[int, Upload] = {}
        self.rejected: list[tuple[int, str]] = []

    @property
    def current_round(self) -> int:
        return self._round

    @property
    def current_seeds(self) -> np.ndarray:
        return self._seeds

    def round_start(self, synced: int) -> RoundStart:
        """The downlink message for a client that has replayed the first `synced` records of the log."""
        return RoundStart(self._round, self._seeds, self.log[synced:])

    def receive(self, data: bytes, sender: int) -> bool:
        """Validate one upload; keep it, or reject it with a logged reason (never averaged silently)."""
        reason = None
        n_extra = self.curvature.upload_extra(self.local_steps, self.perturbations)
        try:
            up = Upload.decode(data) if data else None
        except ProtocolError as e:
            reason = f"malformed: {e}"
        else:
            if up is None:
                reason = "no upload (dropped: the client did not answer within the round)"
            elif up.client != sender or up.client not in self._sampled:
                reason = f"client id {up.client} was not sampled this round (sent by {sender})"
            elif up.round != self._round:
                reason = f"upload for round {up.round}, expected {self._round}"
            elif (up.scalars.shape != (self.local_steps, self.perturbations)
                  or up.extra.size != n_extra):
                reason = (f"{up.scalars.shape[0]}x{up.scalars.shape[1]}+{up.extra.size} scalars, expected "
                          f"{self.local_steps}x{self.perturbations}+{n_extra}")
            elif not (np.isfinite(up.scalars).all() and np.isfinite(up.extra).all()):
                reason = "non-finite scalar"
            elif (biggest := max(np.abs(up.scalars).max(initial=0.0), np.abs(up.extra).max(initial=0.0))
                  ) > self.max_abs_scalar:
                reason = f"scalar of magnitude {biggest:.3g} > max_abs_scalar {self.max_abs_scalar:g}"
            elif up.client in self._uploads:
                reason = "duplicate upload"
        if reason is not None:
            log.warning("round %d: rejected upload from client %d: %s", self._round, sender, reason)
            self.rejected.append((sender, reason))
            return False
        self._uploads[up.client] = up
        return True

    def aggregate(self, stacked: np.ndarray) -> np.ndarray:
        """[clients, tau, P] -> [tau, P] float32."""
        agg = AGGREGATORS[self.aggregator](stacked.astype(np.float64), trim_fraction=self.trim_fraction,
                                           clip_factor=self.clip_factor)
        return agg.astype(np.float32)

    def close_round(self) -> RoundRecord:
        """Aggregate the accepted uploads, append the record to the log and apply it to the global model."""
        tau, num = self.local_steps, self.perturbations
        if self._uploads:
            stacked = np.stack([self._uploads[c].scalars for c in sorted(self._uploads)])
            extras = np.stack([self._uploads[c].extra for c in sorted(self._uploads)])
            rec = RoundRecord(self._round, self._seeds.copy(), self.aggregate(stacked),
                              self.curvature.extra_scalars(stacked, extras), len(stacked))
        else:
            log.error("round %d: every upload was rejected; the round makes no update", self._round)
            rec = RoundRecord(self._round, self._seeds.copy(), np.zeros((tau, num), np.float32),
                              np.zeros(self.curvature.record_extra(tau, num), np.float32), 0)
        apply_record(self.params, self.curvature, rec, self.lr, self.scratch, self.weight_decay)
        self.log.append(rec)
        self._round = None
        return rec
