"""The portable generator (`perturb.generator: portable`): every direction entry is a pure function of
(seed, j, global entry index), with the same bits on any CPU or CUDA GPU, in any chunking and either layout.

torch's `normal_` is not portable: its values depend on the device's generator (Philox on CUDA, mt19937 on CPU) and,
on CUDA, on the kernel's grid (set by the GPU's number of SMs).  Here instead:

1. **A counter-based hash in 32-bit integers.**  The global index k of an entry (its offset in the concatenation of
   the trainable tensors, in their order) is split into k = hi * 2^31 + lo.  `hi` and the stream's 63-bit seed
   (perturb.stream_seed(seed, j)) make two 32-bit keys, mixed in Python's exact integers; `lo` goes through a keyed
   variant of the lowbias32 hash (xor-shifts and multiplications by odd constants, after C. Wellons) in int32
   tensors.  An int32 multiplication keeps the low 32 bits on every CPU and GPU (two's complement wrap-around);
   right shifts are masked, so the sign bit never leaks in.
2. **An inverse-CDF table.**  The hash's top 16 bits pick one of 2^16 equiprobable bins of N(0, 1); its low 16
   bits place the value inside the bin linearly: z = base[bin] + width[bin] * low.  The table is computed once in
   float64 on the CPU (torch.special.ndtri) and rounded to float32, so every device holds the same bits; the
   lookup is an exact gather, and the product and the sum round once each (two separate ops: no fused
   multiply-add).  The two outer bins, beyond |z| = 4.17 (probability 2^-16 each), are uniform on an interval
   with the tail's conditional mean, so |z| never exceeds about 4.6: a direction's tails are those of N(0, 1)
   truncated at probability 3e-5.

Its distribution is tested (tests/test_portable.py: moments, tails, a Kolmogorov-Smirnov test, independence
across j and neighbouring seeds), and the perf tier measures its CPU cost against `normal_` (`portable` part).
"""
from __future__ import annotations

import functools

import torch

BINS_BITS = 16
SPAN = 1 << 31  # indices are hashed in blocks of 2^31 (`lo` fits an int32); the block number goes into the key
MASK32 = 0xFFFFFFFF
C1, C2, C3 = 0x7FEB352D, 0x846CA68B, 0x9E3779B1  # odd multipliers (lowbias32's two, the golden ratio's)


def _s32(v: int) -> int:
    """A 32-bit pattern as the signed int32 torch stores."""
    v &= MASK32
    return v - (1 << 32) if v >= 1 << 31 else v


def _mix(x: int) -> int:
    """lowbias32 on a Python int (exact): the keys' avalanche."""
    x &= MASK32
    x ^= x >> 16
    x = (x * C1) & MASK32
    x ^= x >> 15
    x = (x * C2) & MASK32
    return x ^ (x >> 16)


def keys(stream: int, hi: int) -> tuple[int, int]:
    """Two 32-bit keys from a stream's 63-bit seed and an index block."""
    a = _mix((stream & MASK32) ^ _mix(hi * C3 + 1))
    b = _mix((stream >> 32) ^ _mix(a ^ C3))
    return a, b


@functools.lru_cache(maxsize=4)
def _table(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, step) of the 2^16 bins: z = base + step * low16, computed in float64 on the CPU, then float32."""
    n = 1 << BINS_BITS
    edges = torch.special.ndtri(torch.arange(n + 1, dtype=torch.float64) / n)
    a = float(edges[1])  # -4.17: the inner edge of the lower outer bin
    phi = torch.exp(torch.tensor(-0.5 * a * a, dtype=torch.float64)) / (2 * torch.pi) ** 0.5
    tail_mean = -float(phi) / (1.0 / n)  # E[z | z < a] = -phi(a) / Phi(a)
    edges[0], edges[n] = 2 * tail_mean - a, -(2 * tail_mean - a)  # uniform [L, a] with mean E[z | z < a]
    step = (edges[1:] - edges[:-1]) / (1 << (32 - BINS_BITS))
    base = edges[:-1] + 0.5 * step  # the value of low16 = 0 is the centre of the bin's first sub-interval
    return base.to(torch.float32).to(device), step.to(torch.float32).to(device)


class Work:
    """Scratch for the hash and the gathers (two int32 and one float32 buffer of one piece: 12 bytes per entry),
    grown when a larger piece is asked for."""

    def __init__(self):
        self.x = self.t = self.f = None

    def get(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.x is None or self.x.numel() < n or self.x.device != torch.device(device):
            self.x = torch.empty(n, dtype=torch.int32, device=device)
            self.t = torch.empty(n, dtype=torch.int32, device=device)
            self.f = torch.empty(n, dtype=torch.float32, device=device)
        return self.x[:n], self.t[:n], self.f[:n]

    def nbytes(self) -> int:
        return 0 if self.x is None else 12 * self.x.numel()


@torch.no_grad()
def normal_(out: torch.Tensor, stream: int, start: int, work: Work | None = None) -> torch.Tensor:
    """Fill the 1-d float tensor `out` with the portable N(0, 1) entries of global indices start .. start + n - 1
    of stream `stream`; returns out."""
    n, done = out.numel(), 0
    work = work or Work()
    base_t, step_t = _table(str(out.device))
    while done < n:  # at most one crossing of a 2^31 block per piece (pieces are far smaller than 2^31)
        k = start + done
        hi, lo = divmod(k, SPAN)
        m = min(n - done, SPAN - lo)
        k1, k2 = keys(stream, hi)
        x, t, f = work.get(m, out.device)
        torch.arange(lo, lo + m, dtype=torch.int32, device=out.device, out=x)
        x.bitwise_xor_(_s32(k1))
        _xorshift_(x, t, 16)
        x.mul_(_s32(C1))
        x.bitwise_xor_(_s32(k2))
        _xorshift_(x, t, 15)
        x.mul_(_s32(C2))
        _xorshift_(x, t, 16)
        # top 16 bits: the bin; low 16 bits: the place inside it
        torch.bitwise_right_shift(x, 32 - BINS_BITS, out=t).bitwise_and_((1 << BINS_BITS) - 1)
        x.bitwise_and_((1 << (32 - BINS_BITS)) - 1)
        z = out[done:done + m]
        z.copy_(x)  # an exact conversion: low16 < 2^16
        z.mul_(torch.index_select(step_t, 0, t, out=f))  # exact gathers; one rounding each for * and +
        z.add_(torch.index_select(base_t, 0, t, out=f))
        done += m
    return out


def _xorshift_(x: torch.Tensor, t: torch.Tensor, s: int) -> None:
    """x ^= x >>> s (a logical shift of the 32-bit pattern: the arithmetic shift, masked)."""
    torch.bitwise_right_shift(x, s, out=t).bitwise_and_((1 << (32 - s)) - 1)
    x.bitwise_xor_(t)
