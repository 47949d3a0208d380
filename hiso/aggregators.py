"""How the server combines the scalars of one round's accepted uploads: free functions of a
[clients, tau, P] float64 array, returning [tau, P].  `federation.aggregator` picks one by name.

What each survives, with n accepted uploads per round and f of them faulty (measured in the ablation tier's
`byz-*` experiments, docs/robustness.md):
- mean: nothing; one upload scaled by 1e5 moves the model 1e5 / n times as far as an honest round.
- median (coordinate-wise): f < n / 2.  With n = 2 it *is* the mean, so configs with fewer than 3 clients
  per round are refused.
- trimmed_mean: drops the k = floor(trim_fraction x n) largest and smallest values per coordinate, so it
  survives f <= k.  A trim that drops nothing (k = 0) is refused.
- clipped_mean: scales each upload down to at most clip_factor x the smallest upload norm of the round, then
  averages.  Any number of amplified uploads is bounded by the honest ones, also with n = 2; an upload that is
  tiny, stale or sign-flipped still enters the mean with its (bounded) weight.
"""
from __future__ import annotations

import numpy as np


def mean(stacked: np.ndarray, **_) -> np.ndarray:
    return stacked.mean(0)


def median(stacked: np.ndarray, **_) -> np.ndarray:
    return np.median(stacked, axis=0)


def trimmed_mean(stacked: np.ndarray, trim_fraction: float = 0.1, **_) -> np.ndarray:
    import scipy.stats  # 0.6 s to import: only this aggregator pays it
    return scipy.stats.trim_mean(stacked, trim_fraction, axis=0)


def clipped_mean(stacked: np.ndarray, clip_factor: float = 3.0, **_) -> np.ndarray:
    norms = np.sqrt((stacked.reshape(len(stacked), -1) ** 2).sum(1))
    bound = clip_factor * max(float(norms.min()), 1e-30)
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-30))
    return (stacked * scale[:, None, None]).mean(0)


AGGREGATORS = {"mean": mean, "median": median, "trimmed_mean": trimmed_mean, "clipped_mean": clipped_mean}


def check(name: str, clients_per_round: int, trim_fraction: float) -> str | None:
    """Why `name` would silently be the mean at this participation (None when it is not)."""
    if name == "median" and clients_per_round < 3:
        return f"the median of {clients_per_round} uploads is their mean; use >= 3 clients per round or clipped_mean"
    if name == "trimmed_mean" and int(trim_fraction * clients_per_round) == 0:
        return (f"trim_fraction {trim_fraction} of {clients_per_round} uploads trims nothing (floor(trim x m) = 0); "
                "raise federation.trim_fraction or clients_per_round")
    return None
