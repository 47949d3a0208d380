"""Seeded perturbation streams over a list of parameter tensors.

A direction u ~ N(0, I_d) is never materialised as one d-sized vector: it is drawn tensor by tensor from a
generator seeded by (step seed, perturbation index j) into a reusable scratch buffer and applied in place
(the MeZO trick).  Every party that knows the seed regenerates the same u, provided it uses the same device
type and dtype.  The curvature object maps u to z = H^{-1/2} u one tensor at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


def stream_seed(seed: int, j: int) -> int:
    """63-bit generator seed of perturbation j of the step whose shared seed is `seed`.

    SeedSequence hashes the pair, so neighbouring (seed, j) pairs give unrelated streams.
    """
    state = np.random.SeedSequence([int(seed), int(j)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class Scratch:
    """Two buffers as large as the largest parameter tensor (never d-sized), reused for every direction.

    Allocation is expensive (page faults on a fresh tensor), so directions and update sums live here.
    """

    def __init__(self, params: list[torch.Tensor]):
        biggest = max(p.numel() for p in params)
        kw = dict(dtype=params[0].dtype, device=params[0].device)
        self.u = torch.empty(biggest, **kw)
        self.acc = torch.empty(biggest, **kw)


def directions(seed: int, j: int, params: list[torch.Tensor], curvature, scratch: Scratch) -> Iterator[torch.Tensor]:
    """Yield z_j = H^{-1/2} u_j tensor by tensor, as views into scratch space: consume each before the next.

    Calling it again with the same arguments yields the same values (the generator is reseeded).
    """
    gen = torch.Generator(device=scratch.u.device)
    gen.manual_seed(stream_seed(seed, j))
    for i, p in enumerate(params):
        u = scratch.u[: p.numel()].view(p.shape)
        u.normal_(generator=gen)
        yield curvature.precondition_(i, u)


class StepDirections:
    """The P directions of one step: regenerated on every pass, or (cache=True) kept after the first pass.

    Caching costs P x d floats and saves two regenerations per perturbation in a forward-difference step.
    """

    def __init__(self, seed: int, num: int, params: list[torch.Tensor], curvature, scratch: Scratch,
                 cache: bool = False):
        self.seed, self.num, self.params, self.curvature, self.scratch = int(seed), int(num), params, curvature, scratch
        self._cache: dict[int, list[torch.Tensor]] | None = {} if cache else None

    def __call__(self, j: int) -> Iterator[torch.Tensor]:
        if self._cache is None:
            return directions(self.seed, j, self.params, self.curvature, self.scratch)
        if j not in self._cache:
            self._cache[j] = [z.clone() for z in directions(self.seed, j, self.params, self.curvature, self.scratch)]
        return iter(self._cache[j])


@torch.no_grad()
def perturb_(params: list[torch.Tensor], zs: Iterator[torch.Tensor], scale: float) -> None:
    """x <- x + scale * z, in place, tensor by tensor."""
    for p, z in zip(params, zs, strict=True):
        p.add_(z, alpha=scale)


Observer = Callable[[int, torch.Tensor, list[torch.Tensor] | None], None]


@torch.no_grad()
def step_(params: list[torch.Tensor], dirs: StepDirections, coeffs, lr: float,
          observe: Observer | None = None, keep_directions: bool = False) -> None:
    """x <- x - lr * delta with delta = sum_j coeffs[j] * z_j, tensor-major (all P generators advance together).

    With coeffs = g / P, delta is the paper's Delta x.  The curvature may rescale the applied update
    (`scale_update`: the RMSProp-ZO control; identity for every other kind) but the curvature EMA always
    sees the unscaled delta.  `observe(i, delta_i, zs_i)` (optional) sees each
    tensor's delta (and, with keep_directions, copies of its P directions) before the next tensor reuses the
    scratch space; the curvature update of the round log hooks in here.
    """
    streams = [dirs(j) for j in range(dirs.num)]
    coeffs = [float(c) for c in coeffs]
    for i, p in enumerate(params):
        delta = dirs.scratch.acc[: p.numel()].view(p.shape)
        delta.zero_()
        kept = [] if keep_directions else None
        for c, it in zip(coeffs, streams):
            z = next(it)
            delta.add_(z, alpha=c)
            if kept is not None:
                kept.append(z.clone())
        if lr:  # lr = 0: only observe (optimizers that keep their own state)
            p.sub_(dirs.curvature.scale_update(i, delta), alpha=lr)
        if observe is not None:
            observe(i, delta, kept)
