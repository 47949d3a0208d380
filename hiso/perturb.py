"""Seeded perturbation streams over a list of parameter tensors.

A direction u ~ N(0, I_d) is never materialised as one d-sized vector: it is drawn in pieces from a generator
seeded by (step seed, perturbation index j) into a small reusable scratch buffer and applied in place (the
MeZO trick).  A piece is a contiguous run of at most `chunk` entries of one tensor (flattened); curvatures
that are not elementwise (`Curvature.elementwise` False: block or per-tensor statistics) get whole tensors.
Every party that knows the seed regenerates the same u, provided it uses the same device type and dtype.

On CPU the chunk size does not change a single bit: torch draws normals in blocks of 16 and the pieces are
cut at multiples of 16 with no tail shorter than 16, so a chunked draw equals the whole-tensor draw (tested).
The curvature maps u to z = H^{-1/2} u piece by piece.

On the flat layout (hiso/layout.py: one buffer for the trainable tensors, the CUDA default) the pieces are
`FLAT_CHUNK` entries of that buffer, and `swap_` / `step_(restore=...)` fold the restore of one perturbation
into the next write, so a forward-difference step writes the parameters P + 1 times instead of 2P + 1.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch

# 2^18 float32 entries = 1 MiB per scratch buffer: at most three such buffers (direction, update sum, H^-1/2)
# whatever the model; large enough that per-piece overhead is negligible (bench/perf.py --only chunk).
CHUNK = 1 << 18
# The flat layout's pieces: 2^26 entries (256 MiB per fp32 scratch buffer, four of them at most): OPT-1.3B's
# 1.3 G entries are 20 pieces, so a pass costs a few dozen ops, not thousands (bench/perf_dispatch.py).
FLAT_CHUNK = 1 << 26
# native: the device's normal_ (fast; bits depend on the device, and on CUDA on the GPU model and the chunk);
# portable: a pure function of (seed, j, global entry index), the same bits everywhere (hiso/portable.py)
GENERATORS = ("native", "portable")


@functools.lru_cache(maxsize=1 << 12)
def stream_seed(seed: int, j: int) -> int:
    """63-bit generator seed of perturbation j of the step whose shared seed is `seed`.

    SeedSequence hashes the pair, so neighbouring (seed, j) pairs give unrelated streams.  A pure function,
    memoised: a step's directions are drawn two or three times (perturb, restore, apply), and SeedSequence is
    about 40 us a call, a tenth of a d = 10^4 quadratic round.
    """
    state = np.random.SeedSequence([int(seed), int(j)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class Piece(NamedTuple):
    """Entries [start, start + z.numel()) of tensor i (flattened), as a view into scratch space."""

    i: int
    start: int
    z: torch.Tensor


def pieces(n: int, chunk: int | None) -> Iterator[tuple[int, int]]:
    """(start, stop) of the pieces of a tensor of n entries: multiples of 16, no tail shorter than 16."""
    if chunk is None or n <= chunk:
        yield 0, n
        return
    start = 0
    while start < n:
        stop = start + chunk
        if n - stop < 16:
            stop = n
        yield start, stop
        start = stop


def flat(p: torch.Tensor) -> torch.Tensor:
    """The flat view of a parameter tensor (pieces address it); parameters must be contiguous."""
    if not p.is_contiguous():
        raise ValueError("perturbation needs contiguous parameter tensors (call .contiguous() when building the model)")
    return p if p.dim() == 1 else p.view(-1)


def head(buf: torch.Tensor, n: int) -> torch.Tensor:
    """The first n entries of a 1-d buffer: the buffer itself when it has n (no view op: on an accelerator every op
    costs host time, and the flat layout's full pieces are whole scratch buffers)."""
    return buf if buf.numel() == n else buf[:n]


def shaped(t: torch.Tensor, shape) -> torch.Tensor:
    return t if t.shape == shape else t.view(shape)


class Scratch:
    """Three buffers of one piece each (direction, second direction, update sum) (at most chunk + 15 entries, or the largest tensor for curvatures that need
    whole tensors), reused for every direction: never d-sized.  Allocation is expensive (page faults on a fresh
    tensor), so the buffers are allocated once and grown only if a larger piece is asked for."""

    def __init__(self, params: list[torch.Tensor], chunk: int | None = None, generator: str = "native"):
        chunk = CHUNK if chunk is None else chunk
        if generator not in GENERATORS:
            raise ValueError(f"perturb.generator must be one of {list(GENERATORS)}, got {generator!r}")
        self.generator = generator
        self.work = None  # the portable generator's scratch (hiso/portable.py), made when first used
        if chunk < 16 or chunk % 16:
            raise ValueError(f"chunk must be a positive multiple of 16, got {chunk}")
        self.chunk = int(chunk)
        self.kw = dict(dtype=params[0].dtype, device=params[0].device)
        self.u = torch.empty(0, **self.kw)
        self.v = torch.empty(0, **self.kw)  # a second direction slot (swap_), allocated when first used
        self.acc = torch.empty(0, **self.kw)

    def chunk_for(self, curvature) -> int | None:
        return self.chunk if curvature.elementwise else None

    def buffers(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.u.numel() < n:
            self.u = torch.empty(n, **self.kw)
            self.acc = torch.empty(n, **self.kw)
        return head(self.u, n), head(self.acc, n)

    def first(self, n: int) -> torch.Tensor:
        """The direction slot alone."""
        if self.u.numel() < n:
            self.buffers(n)
        return head(self.u, n)

    def second(self, n: int) -> torch.Tensor:
        """The second direction slot: two streams drawn side by side (swap_) or the folded restore (step_)."""
        if self.v.numel() < n:
            self.v = torch.empty(max(n, self.u.numel()), **self.kw)
        return head(self.v, n)

    def nbytes(self) -> int:
        own = sum(b.numel() * b.element_size() for b in (self.u, self.v, self.acc))
        return own + (self.work.nbytes() if self.work is not None else 0)


def generator(device: torch.device) -> torch.Generator:
    """The device's generator.  Meta tensors (shapes only: the dispatch counts of bench/perf_dispatch.py) have none;
    their normal_ accepts a CPU generator and draws nothing."""
    return torch.Generator(device="cpu" if torch.device(device).type == "meta" else device)


def directions(seed: int, j: int, params: list[torch.Tensor], curvature, scratch: Scratch,
               slot: int = 0) -> Iterator[Piece]:
    """Yield z_j = H^{-1/2} u_j piece by piece, as views into scratch space: consume each before the next.
    Two streams consumed side by side use different slots (0 and 1).

    Calling it again with the same arguments yields the same values (the generator is reseeded).
    """
    chunk = scratch.chunk_for(curvature)
    if scratch.generator == "portable":
        from .portable import Work, normal_
        stream, offset = stream_seed(seed, j), 0
        scratch.work = scratch.work or Work()
        for i, p in enumerate(params):  # entry k of the concatenated tensors is a function of (seed, j, k) alone
            for start, stop in pieces(p.numel(), chunk):
                u = scratch.first(stop - start) if slot == 0 else scratch.second(stop - start)
                normal_(u, stream, offset + start, scratch.work)
                yield Piece(i, start, curvature.precondition_(i, u, start))
            offset += p.numel()
        return
    gen = generator(scratch.kw["device"])
    gen.manual_seed(stream_seed(seed, j))
    for i, p in enumerate(params):
        for start, stop in pieces(p.numel(), chunk):
            u = scratch.first(stop - start) if slot == 0 else scratch.second(stop - start)
            u.normal_(generator=gen)
            yield Piece(i, start, curvature.precondition_(i, u, start))


class StepDirections:
    """The P directions of one step: regenerated on every pass, or (cache=True) kept after the first pass.

    Caching costs P x d floats and saves two regenerations per perturbation in a forward-difference step.
    """

    def __init__(self, seed: int, num: int, params: list[torch.Tensor], curvature, scratch: Scratch,
                 cache: bool = False):
        self.seed, self.num, self.params, self.curvature, self.scratch = int(seed), int(num), params, curvature, scratch
        self._cache: dict[int, list[Piece]] | None = {} if cache else None

    def __call__(self, j: int, slot: int = 0) -> Iterator[Piece]:
        if self._cache is None:
            return directions(self.seed, j, self.params, self.curvature, self.scratch, slot)
        if j not in self._cache:
            self._cache[j] = [Piece(q.i, q.start, q.z.clone())
                              for q in directions(self.seed, j, self.params, self.curvature, self.scratch)]
        return iter(self._cache[j])


@torch.no_grad()
def perturb_(params: list[torch.Tensor], zs: Iterator[Piece], scale: float) -> None:
    """x <- x + scale * z, in place, piece by piece."""
    for i, start, z in zs:
        flat(params[i])[start:start + z.numel()].add_(z, alpha=scale)


@torch.no_grad()
def swap_(params: list[torch.Tensor], old: Iterator[Piece], new: Iterator[Piece], scale: float,
          scratch: Scratch) -> None:
    """x <- x + scale * (z_new - z_old), one write per piece: undoes perturbation `old` and applies `new` in the
    same pass (x drifts by float rounding only, as with a separate restore).  `old` must be drawn in slot 0 and
    `new` in slot 1; the difference goes to the update-sum buffer, which no estimate uses."""
    for a, b in zip(old, new, strict=True):
        assert (a.i, a.start) == (b.i, b.start), "direction streams out of step"
        d = shaped(scratch.buffers(a.z.numel())[1], a.z.shape)
        torch.sub(b.z, a.z, out=d)
        flat(params[a.i])[a.start:a.start + d.numel()].add_(d, alpha=scale)


# observe(i, start, delta, zs): entries [start, start + delta.numel()) of tensor i (flat views)
Observer = Callable[[int, int, torch.Tensor, list[torch.Tensor] | None], None]


@torch.no_grad()
def step_(params: list[torch.Tensor], dirs: StepDirections, coeffs, lr: float,
          observe: Observer | None = None, keep_directions: bool = False, weight_decay: float = 0.0,
          restore: float = 0.0) -> None:
    """x <- x - lr * (delta + weight_decay * x) with delta = sum_j coeffs[j] * z_j, piece-major (all P generators
    advance together).  The weight-decay term is SGD's (torch.optim.SGD(weight_decay=...), as in the authors'
    code): a function of x alone, so every party that replays the log applies it identically.

    With coeffs = g / P, delta is the paper's Delta x.  The curvature may rescale the applied update
    (`scale_update`: the RMSProp-ZO control; identity for every other kind) but the curvature EMA always
    sees the unscaled delta.  `observe(i, start, delta, zs)` (optional) sees each piece's delta (and, with
    keep_directions, copies of its P directions) before the next piece reuses the scratch space; the
    curvature update of the round log hooks in here.

    `restore` (a client on the flat layout): x still holds the estimate's last perturbation, x + restore *
    z_{num-1}; it is removed in the update's write, x <- x - (restore * z_{num-1} + lr * delta).
    """
    streams = [dirs(j) for j in range(dirs.num)]
    coeffs = [float(c) for c in coeffs]
    chunk = dirs.scratch.chunk_for(dirs.curvature)
    for i, p in enumerate(params):
        x = flat(p)
        for start, stop in pieces(p.numel(), chunk):
            delta = dirs.scratch.buffers(stop - start)[1]
            delta.zero_()
            kept = [] if keep_directions else None
            for c, it in zip(coeffs, streams):
                q = next(it)
                assert q.i == i and q.start == start, "direction streams out of step"
                delta.add_(q.z, alpha=c)
                if kept is not None:
                    kept.append(q.z.clone())
            if lr or restore:  # lr = 0: only observe (optimizers that keep their own state)
                if weight_decay:
                    x[start:stop].mul_(1.0 - lr * weight_decay)
                update = dirs.curvature.scale_update(i, delta, start)
                if restore:  # q.z is z_{num-1} of this piece
                    both = shaped(dirs.scratch.second(stop - start), q.z.shape)
                    torch.mul(q.z, restore, out=both)
                    x[start:stop].sub_(both.add_(update, alpha=lr))
                else:
                    x[start:stop].sub_(update, alpha=lr)
            if observe is not None:
                observe(i, start, delta, kept)
