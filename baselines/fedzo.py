"""FedZO (Fang et al. 2022): tau local ZO-SGD steps with P private random directions, full delta uploaded.

Same estimator as DeComFL (forward or central differences, isotropic directions), but the directions are
private to each client, so the server needs the d-float delta: bytes scale with d.
"""
from __future__ import annotations

import numpy as np

from hiso.curvature import Identity
from hiso.estimators import estimate
from hiso.methods import register_method
from hiso.perturb import Scratch, StepDirections, step_

from .common import VectorFederation


class FedZO(VectorFederation):
    def __init__(self, cfg, task, opts):
        super().__init__(cfg, task)
        f = cfg.federation
        self.P, self.mu, self.difference = f.perturbations, f.mu, f.difference
        self.identity = Identity().bind(self.work)
        self.scratch = Scratch(self.work)

    def local_update(self, client, r, rng):
        loss0, passes = float("nan"), 0
        for k in range(self.tau):
            batch = self.task.batch(client, rng, self.batch_size)
            seed = int(rng.integers(0, 2**32))  # private directions: never shared, so the delta must travel
            dirs = StepDirections(seed, self.P, self.work, self.identity, self.scratch)
            est = estimate(self.work, lambda: self.task.loss(batch), dirs, self.mu, self.difference)
            step_(self.work, dirs, est.scalars / np.float32(self.P), self.lr,  # every local step is kept
                  weight_decay=self.cfg.federation.weight_decay)
            passes += est.forward_passes
            if k == 0:
                loss0 = est.loss
        return loss0, {"forward_passes": passes}


register_method("fedzo", lambda cfg, task, opts: FedZO(cfg, task, opts), weight_decay=True, label="FedZO",
                color="#9467bd",
                doc="FedZO: local ZO-SGD, full model delta up, full model down")
