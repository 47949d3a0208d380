"""Problems and client partitions."""
import math

import numpy as np
import pytest
import torch

from hiso.config import load_config
from hiso.run import build_federation
from hiso.tasks.quadratic import Quadratic, QuadraticOptions
from hiso.tasks.split import dirichlet_split


@pytest.mark.parametrize("kappa", [1.0, 10.0, 250.0])
def test_power_spectrum_has_the_asked_effective_rank(kappa):
    q = Quadratic(QuadraticOptions(dim=500, effective_rank=kappa), num_clients=3, seed=0)
    assert q.lam.max() == pytest.approx(1.0)
    assert q.lam.sum() / q.lam.max() == pytest.approx(kappa, rel=1e-6)


def test_quadratic_optimum_and_oracle():
    q = Quadratic(QuadraticOptions(dim=30, rotate=True, spectrum="lognormal"), num_clients=4, seed=1)
    q.x.data.copy_(torch.tensor(q.x_star, dtype=torch.float32))
    assert q.evaluate()["suboptimality"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(q.hessian_diagonal()[0].numpy(), np.diag(q.hessian_matrix()), rtol=1e-5)
    # client losses average to the global objective
    x = np.random.default_rng(0).standard_normal(30)
    q.x.data.copy_(torch.tensor(x, dtype=torch.float32))
    mean_client = np.mean([q.loss(c) for c in range(4)])
    assert mean_client == pytest.approx(q._f64(q.x.detach().double().numpy()), rel=1e-4)


def test_dirichlet_split_covers_everything_once_and_skews_with_alpha():
    labels = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    for alpha in (0.1, 1.0, 100.0, math.inf):
        parts = dirichlet_split(labels, 6, alpha, rng)
        allidx = np.concatenate(parts)
        assert len(allidx) == len(labels) and len(np.unique(allidx)) == len(labels)

    def skew(alpha):  # mean over clients of the largest class share
        parts = dirichlet_split(labels, 6, alpha, np.random.default_rng(1))
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    assert skew(0.1) > skew(1.0) > skew(math.inf)
    assert skew(math.inf) < 0.2
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_split(labels, 6, 0.0, rng)


def test_digits_partition_and_batches_are_seeded():
    cfg = load_config(data={"task": {"name": "digits", "alpha": 0.3}, "run": {"progress": False}})
    a, ta = build_federation(cfg)
    b, tb = build_federation(cfg)
    assert all(np.array_equal(x, y) for x, y in zip(ta.shards, tb.shards))
    xa, _ = ta.batch(0, np.random.default_rng(3), 8)
    xb, _ = tb.batch(0, np.random.default_rng(3), 8)
    assert torch.equal(xa, xb)
    assert sum(len(s) for s in ta.shards) == len(ta.y_train)


@pytest.mark.parametrize("agg", ["median", "trimmed_mean"])
def test_robust_aggregators_ignore_one_outlier(agg):
    cfg = load_config(data={"task": {"name": "quadratic", "dim": 10}, "run": {"progress": False},
                            "federation": {"num_clients": 5, "clients_per_round": 5, "aggregator": agg,
                                           "trim_fraction": 0.2, "perturbations": 1}})
    fed, _ = build_federation(cfg)
    stacked = np.array([[[1.0]], [[1.1]], [[0.9]], [[1.0]], [[1000.0]]], np.float32)
    assert fed.server.aggregate(stacked)[0, 0] == pytest.approx(1.0, abs=0.05)
    fed.server.aggregator = "mean"
    assert fed.server.aggregate(stacked)[0, 0] > 100
