"""Faulty (Byzantine) clients as an experiment: `federation.faulty_clients` of the M clients, chosen by the run
seed, replace their uploads' scalars every round they are sampled.  The corrupted upload goes through the
same wire, validation and aggregation as an honest one, and the round log records the aggregate, so every
party's replay stays exact whatever the clients send.

Kinds (`federation.fault`; `federation.fault_scale` = s):
- nan:          every scalar NaN (validation rejects the upload);
- huge:         every scalar 1e30 (rejected when above federation.max_abs_scalar);
- random_scale: each scalar times s * g, g ~ N(0, 1) drawn from (seed, round, client);
- sign_flip:    the honest scalars times -s;
- stale:        the previous round's aggregate from the log (zeros in round 0): a replayed old message.
"""
from __future__ import annotations

import numpy as np

from . import streams

KINDS = ("nan", "huge", "random_scale", "sign_flip", "stale")


def faulty_set(seed: int, num_clients: int, count: int) -> frozenset[int]:
    """Which clients are faulty: the first `count` of a permutation drawn from the run seed."""
    order = streams.rng(seed, streams.FAULTY).permutation(num_clients)
    return frozenset(int(c) for c in order[:count])


def corrupt(kind: str, scalars: np.ndarray, scale: float, seed: int, r: int, client: int,
            last_aggregate: np.ndarray | None) -> np.ndarray:
    """The scalars a faulty client uploads instead of `scalars` (float32, same shape)."""
    if kind == "nan":
        out = np.full_like(scalars, np.nan)
    elif kind == "huge":
        out = np.full_like(scalars, 1e30)
    elif kind == "random_scale":
        g = streams.rng(seed, streams.FAULT_NOISE, r, client)
        out = scalars * scale * g.standard_normal(scalars.shape)
    elif kind == "sign_flip":
        out = -scale * scalars
    elif kind == "stale":
        out = np.zeros_like(scalars) if last_aggregate is None else last_aggregate.reshape(scalars.shape)
    else:
        raise ValueError(f"unknown fault {kind!r}; choose one of {KINDS}")
    return np.asarray(out, dtype=np.float32)
