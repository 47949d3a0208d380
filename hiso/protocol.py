"""Scalar-only messages with a real wire format, and the round log that is the whole training state.

Every number that crosses the (simulated) network is serialised here, so byte counts are measured as
len(bytes), never computed by formula.  Layout (little-endian):

    Upload     'HSUP' | round u32 | client u32 | tau u16 | P u16 | n_extra u16 | f32[tau*P + n_extra]
    RoundStart 'HSDN' | round u32 | tau u16 | n_records u32 | seeds u32[tau] | records...
    Record     round u32 | tau u16 | P u16 | n_extra u16 | n_accepted u16 | seeds u32[tau]
               | f32[tau*P] aggregated scalars | f32[n_extra]
    Vector     'HSVC' | round u32 | client u32 | n u64 | f32[n]      (model / delta of vector methods)
    PoolStart  'HSKP' | round u32 | tau u16 | K u32 | P u16 | seeds u32[tau] | f32[K*P]   (FedKSeed catch-up)

Seeds are 4 bytes, scalars fp32 (4 bytes).  A record of a round in which every upload was rejected has
n_accepted = 0 and is replayed as a no-op.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

UP_HEAD = struct.Struct("<4sIIHHH")
VEC_HEAD = struct.Struct("<4sIIQ")
POOL_HEAD = struct.Struct("<4sIHIH")
DOWN_HEAD = struct.Struct("<4sIHI")
REC_HEAD = struct.Struct("<IHHHH")


class ProtocolError(ValueError):
    """A message that cannot be decoded or does not fit the round it claims to belong to."""


@dataclass(frozen=True)
class Upload:
    """What a client sends after its local steps: tau x P directional derivatives (+ declared extras)."""

    round: int
    client: int
    scalars: np.ndarray  # float32 [tau, P]
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def encode(self) -> bytes:
        tau, p = self.scalars.shape
        head = UP_HEAD.pack(b"HSUP", self.round, self.client, tau, p, self.extra.size)
        return head + np.ascontiguousarray(self.scalars, "<f4").tobytes() + np.ascontiguousarray(self.extra, "<f4").tobytes()

    @staticmethod
    def decode(data: bytes) -> Upload:
        if len(data) < UP_HEAD.size:
            raise ProtocolError(f"upload of {len(data)} bytes is shorter than its {UP_HEAD.size}-byte header")
        magic, rnd, client, tau, p, n_extra = UP_HEAD.unpack_from(data)
        if magic != b"HSUP":
            raise ProtocolError(f"upload has bad magic {magic!r}")
        want = UP_HEAD.size + 4 * (tau * p + n_extra)
        if len(data) != want:
            raise ProtocolError(f"upload declares {tau}x{p}+{n_extra} scalars ({want} bytes) but has {len(data)} bytes")
        vals = np.frombuffer(data, "<f4", offset=UP_HEAD.size)
        return Upload(rnd, client, vals[: tau * p].reshape(tau, p).astype(np.float32), vals[tau * p:].astype(np.float32))


@dataclass(frozen=True)
class RoundRecord:
    """One entry of the round log: the round's seeds and aggregated scalars (+ curvature extras)."""

    round: int
    seeds: np.ndarray  # uint32 [tau]
    scalars: np.ndarray  # float32 [tau, P], the aggregate g-bar
    extra: np.ndarray  # float32 [n_extra], e.g. the Gram entries for mean-of-squares curvature
    n_accepted: int

    def encode(self) -> bytes:
        tau, p = self.scalars.shape
        return (REC_HEAD.pack(self.round, tau, p, self.extra.size, self.n_accepted)
                + np.ascontiguousarray(self.seeds, "<u4").tobytes()
                + np.ascontiguousarray(self.scalars, "<f4").tobytes()
                + np.ascontiguousarray(self.extra, "<f4").tobytes())

    @staticmethod
    def decode_from(data: bytes, offset: int) -> tuple[RoundRecord, int]:
        if len(data) < offset + REC_HEAD.size:
            raise ProtocolError("truncated round record header")
        rnd, tau, p, n_extra, acc = REC_HEAD.unpack_from(data, offset)
        offset += REC_HEAD.size
        end = offset + 4 * (tau + tau * p + n_extra)
        if len(data) < end:
            raise ProtocolError(f"truncated round record for round {rnd}")
        seeds = np.frombuffer(data, "<u4", tau, offset).astype(np.uint32)
        vals = np.frombuffer(data, "<f4", tau * p + n_extra, offset + 4 * tau).astype(np.float32)
        return RoundRecord(rnd, seeds, vals[: tau * p].reshape(tau, p), vals[tau * p:], acc), end

    def sizes(self) -> dict[str, int]:
        """Bytes of this record by kind: seeds, scalars (aggregates + extras), header."""
        tau, p = self.scalars.shape
        return {"seeds": 4 * tau, "scalars": 4 * (tau * p + self.extra.size), "header": REC_HEAD.size}


@dataclass(frozen=True)
class RoundStart:
    """Server -> sampled client: this round's seeds plus every record the client missed (catch-up)."""

    round: int
    seeds: np.ndarray  # uint32 [tau]
    catch_up: list[RoundRecord]

    def encode(self) -> bytes:
        head = DOWN_HEAD.pack(b"HSDN", self.round, self.seeds.size, len(self.catch_up))
        return head + np.ascontiguousarray(self.seeds, "<u4").tobytes() + b"".join(r.encode() for r in self.catch_up)

    @staticmethod
    def decode(data: bytes) -> RoundStart:
        if len(data) < DOWN_HEAD.size:
            raise ProtocolError("truncated round-start header")
        magic, rnd, tau, n = DOWN_HEAD.unpack_from(data)
        if magic != b"HSDN":
            raise ProtocolError(f"round start has bad magic {magic!r}")
        off = DOWN_HEAD.size + 4 * tau
        if len(data) < off:
            raise ProtocolError("truncated round-start seeds")
        seeds = np.frombuffer(data, "<u4", tau, DOWN_HEAD.size).astype(np.uint32)
        recs = []
        for _ in range(n):
            rec, off = RoundRecord.decode_from(data, off)
            recs.append(rec)
        if off != len(data):
            raise ProtocolError(f"{len(data) - off} trailing bytes after round start")
        return RoundStart(rnd, seeds, recs)

    def sizes(self) -> dict[str, int]:
        """Bytes by kind: this round's seeds, catch-up (records), header."""
        return {"seeds": 4 * self.seeds.size, "catch_up": sum(len(r.encode()) for r in self.catch_up),
                "header": DOWN_HEAD.size}


@dataclass(frozen=True)
class VectorMessage:
    """A full fp32 vector (model broadcast or model delta) of the vector-communicating baselines."""

    round: int
    client: int
    values: np.ndarray  # float32 [n]

    def encode(self) -> bytes:
        return VEC_HEAD.pack(b"HSVC", self.round, self.client, self.values.size) + \
            np.ascontiguousarray(self.values, "<f4").tobytes()

    @staticmethod
    def decode(data: bytes) -> VectorMessage:
        if len(data) < VEC_HEAD.size:
            raise ProtocolError("truncated vector header")
        magic, rnd, client, n = VEC_HEAD.unpack_from(data)
        if magic != b"HSVC" or len(data) != VEC_HEAD.size + 4 * n:
            raise ProtocolError(f"vector message declares {n} floats but has {len(data) - VEC_HEAD.size} bytes")
        return VectorMessage(rnd, client, np.frombuffer(data, "<f4", n, VEC_HEAD.size).astype(np.float32))

    @staticmethod
    def wire_size(n: int) -> int:
        """len(encode()) for an n-float vector, without materialising a model-sized bytes object."""
        return VEC_HEAD.size + 4 * n


@dataclass(frozen=True)
class PoolRoundStart:
    """FedKSeed downlink: this round's seeds plus, for a client that missed rounds, the per-pool-seed sums of
    the scalars it missed (K x P floats, O(K) however many rounds were missed); `coeffs` is None when the
    client missed nothing."""

    round: int
    seeds: np.ndarray  # uint32 [tau]
    coeffs: np.ndarray | None  # float32 [K, P]

    def encode(self) -> bytes:
        k, p = self.coeffs.shape if self.coeffs is not None else (0, 0)
        head = POOL_HEAD.pack(b"HSKP", self.round, self.seeds.size, k, p)
        body = b"" if self.coeffs is None else np.ascontiguousarray(self.coeffs, "<f4").tobytes()
        return head + np.ascontiguousarray(self.seeds, "<u4").tobytes() + body

    @staticmethod
    def decode(data: bytes) -> PoolRoundStart:
        if len(data) < POOL_HEAD.size:
            raise ProtocolError("truncated pool round-start header")
        magic, rnd, tau, k, p = POOL_HEAD.unpack_from(data)
        if magic != b"HSKP" or len(data) != POOL_HEAD.size + 4 * tau + 4 * k * p:
            raise ProtocolError("malformed pool round start")
        seeds = np.frombuffer(data, "<u4", tau, POOL_HEAD.size).astype(np.uint32)
        coeffs = np.frombuffer(data, "<f4", k * p, POOL_HEAD.size + 4 * tau).astype(np.float32).reshape(k, p) if k else None
        return PoolRoundStart(rnd, seeds, coeffs)

    def sizes(self) -> dict[str, int]:
        return {"seeds": 4 * self.seeds.size, "catch_up": 0 if self.coeffs is None else 4 * self.coeffs.size,
                "header": POOL_HEAD.size}
