"""FedKSeed (Qin et al. 2024): scalar-only ZO-SGD whose seeds come from a fixed pool of K candidates.

Because the update is linear in the scalars (identity curvature), everything a client missed collapses into
one accumulated coefficient per (pool seed, perturbation): catch-up costs K x P floats and K x P direction
regenerations, however many rounds were missed (DeComFL: one record per missed round).  Summing in another
order than the server's sequential replay makes the caught-up model equal the server's to float rounding
(checked to 1e-5), not bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hiso import streams
from hiso.federation import Federation
from hiso.methods import register_method, scalar_only
from hiso.perturb import StepDirections, step_
from hiso.protocol import PoolRoundStart


@dataclass
class FedKSeedOptions:
    pool_size: int = 4096  # K


class FedKSeed(Federation):
    replay_tolerance = 1e-5

    def __init__(self, *args, pool_size: int, **kw):
        super().__init__(*args, **kw)
        if pool_size < 1:
            raise ValueError(f"method_options.pool_size must be >= 1, got {pool_size}")
        self.pool = streams.rng(self.seed, streams.SEED_POOL).integers(0, 2**32, pool_size,
                                                                                          dtype=np.uint32)
        self.index = {int(s): i for i, s in enumerate(self.pool)}

    def draw_seeds(self, rng):
        return self.pool[rng.integers(0, len(self.pool), self.tau)]

    def downlink(self, c):
        missed = self.server.log[c.synced:]
        coeffs = None
        if missed:
            coeffs = np.zeros((len(self.pool), self.P), np.float32)
            for rec in missed:
                if rec.n_accepted:
                    for k, s in enumerate(rec.seeds):
                        coeffs[self.index[int(s)]] += rec.scalars[k] / np.float32(self.P)
        return PoolRoundStart(self.server.current_round, self.server.current_seeds, coeffs)

    @torch.no_grad()
    def replay(self, c, msg, scratch):
        if msg.coeffs is not None:
            for i in np.flatnonzero(np.abs(msg.coeffs).sum(1)):
                dirs = StepDirections(int(self.pool[i]), self.P, c.params, c.curvature, scratch)
                step_(c.params, dirs, msg.coeffs[i], self.lr)
        c.synced = len(self.server.log)


register_method("fedkseed", lambda cfg, task, opts: scalar_only(cfg, task, opts, FedKSeed, pool_size=opts.pool_size),
                FedKSeedOptions, default_curvature="identity", fixed_curvature=True, faults=True, label="FedKSeed",
                color="#8c564b",
                doc="FedKSeed: scalar-only ZO-SGD with a pool of K seeds; catch-up in O(K)")
