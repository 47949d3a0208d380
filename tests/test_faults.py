"""Faulty clients as configuration (hiso/faults.py) and the aggregators that survive them (hiso/aggregators.py):
the faulty set is drawn from the seed, every party's replay stays exact, and each aggregator survives what its
docstring says."""
import numpy as np
import pytest

from hiso.aggregators import AGGREGATORS, clipped_mean
from hiso.faults import KINDS, corrupt, faulty_set
from hiso.run import RunFailed, build_federation, run


def quad(cfg_factory, **fed):
    return cfg_factory(method="hiso", task={"name": "quadratic", "dim": 200, "effective_rank": 5},
                       federation={"rounds": 300, "lr": 0.03, "clients_per_round": 6, "max_abs_scalar": float("inf"),
                                   "trim_fraction": 0.2, **fed},
                       run={"eval_every": 50, "progress": False, "checkpoint_every": 0})


def final(cfg):
    try:
        return run(cfg).metrics["rel_suboptimality"].dropna().iloc[-1]
    except RunFailed as e:
        assert e.status == "diverged"
        return float("inf")


def test_the_faulty_set_is_drawn_from_the_seed():
    a, b = faulty_set(0, 6, 2), faulty_set(0, 6, 2)
    assert a == b and len(a) == 2 and a <= set(range(6))
    assert {faulty_set(s, 100, 10) for s in range(5)} != {a}  # other seeds, other clients
    assert faulty_set(3, 6, 1) <= faulty_set(3, 6, 2)  # more faults keep the earlier ones


@pytest.mark.parametrize("kind", KINDS)
def test_every_fault_keeps_every_partys_replay_exact(cfg_factory, kind):
    cfg = cfg_factory(method="hiso", task={"name": "quadratic", "dim": 40},
                      federation={"rounds": 12, "num_clients": 5, "clients_per_round": 3, "faulty_clients": 1,
                                  "fault": kind, "fault_scale": 10.0, "aggregator": "median", "verify_replay": True})
    fed, _ = build_federation(cfg)
    rows = [fed.run_round() for _ in range(12)]
    assert max(r["replay_max_abs_diff"] for r in rows) <= 1e-6
    if kind in ("nan", "huge"):  # validation rejects them before aggregation
        assert sum(r["rejected"] for r in rows) > 0
    else:
        assert sum(r["rejected"] for r in rows) == 0


def test_six_per_round_one_faulty_median_and_trimmed_mean_survive_the_mean_does_not(cfg_factory):
    clean = final(quad(cfg_factory))
    faulty = {agg: final(quad(cfg_factory, faulty_clients=1, aggregator=agg)) for agg in AGGREGATORS}
    assert faulty["mean"] == float("inf")
    for agg in ("median", "trimmed_mean", "clipped_mean"):
        assert faulty[agg] < 2 * clean + 0.05, (agg, faulty[agg], clean)


def test_clipped_mean_survives_one_faulty_of_two(cfg_factory):
    clean = final(quad(cfg_factory, clients_per_round=2))
    assert final(quad(cfg_factory, clients_per_round=2, faulty_clients=1, aggregator="mean")) == float("inf")
    clipped = final(quad(cfg_factory, clients_per_round=2, faulty_clients=1, aggregator="clipped_mean"))
    assert clipped < 2 * clean + 0.05


def test_clipped_mean_bounds_every_upload_by_the_smallest():
    honest = np.ones((1, 1, 5))
    stacked = np.concatenate([honest, 1e5 * honest, 2 * honest])
    out = clipped_mean(stacked, clip_factor=3.0)
    assert np.allclose(out, (1 + 3 + 2) / 3)


def test_stale_replays_the_previous_aggregate_and_random_scale_is_seeded():
    s = np.arange(5, dtype=np.float32).reshape(1, 5)
    last = np.full((1, 5), 7.0, dtype=np.float32)
    assert np.array_equal(corrupt("stale", s, 1.0, 0, 3, 1, last), last)
    assert np.array_equal(corrupt("stale", s, 1.0, 0, 0, 1, None), np.zeros_like(s))
    a, b = corrupt("random_scale", s, 1e5, 0, 3, 1, None), corrupt("random_scale", s, 1e5, 0, 3, 1, None)
    assert np.array_equal(a, b) and not np.array_equal(a, corrupt("random_scale", s, 1e5, 0, 4, 1, None))
    assert np.array_equal(corrupt("sign_flip", s, 2.0, 0, 0, 0, None), -2 * s)
