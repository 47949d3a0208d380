"""Client partitions: Dirichlet(alpha) label skew (alpha = inf gives an IID split)."""
from __future__ import annotations

import math

import numpy as np


def dirichlet_split(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator,
                    min_size: int = 2, max_tries: int = 1000) -> list[np.ndarray]:
    """Indices of each client's examples.  For each class, its examples are divided among the clients in
    proportions drawn from Dirichlet(alpha * 1); redrawn until every client holds >= min_size examples.
    alpha = inf: a uniformly random, equal-size split."""
    labels = np.asarray(labels)
    n = len(labels)
    if num_clients * min_size > n:
        raise ValueError(f"{n} examples cannot give {num_clients} clients {min_size} examples each")
    if math.isinf(alpha):
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0 (or inf for IID), got {alpha}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gave every one of {num_clients} clients >= {min_size} "
                     f"examples in {max_tries} draws; raise alpha or lower the number of clients")
