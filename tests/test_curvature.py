"""Curvature updates from the log, against Eq. 12 computed by hand, and their failure modes."""
import numpy as np
import pytest
import torch

from hiso.curvature import BlockDiagonal, CurvatureError, Diagonal, LayerScalar, Oracle
from hiso.perturb import Scratch, stream_seed
from hiso.protocol import RoundRecord
from hiso.server import apply_record


def record(scalars, seeds=(7,), extra=()):
    return RoundRecord(0, np.array(seeds, np.uint32), np.array(scalars, np.float32), np.array(extra, np.float32), 2)


def hand_delta(seed, gbar, shapes, h=None):
    """Delta x = (1/P) sum_j gbar_j H^{-1/2} u_j, drawn by hand from the documented streams."""
    gens = [torch.Generator().manual_seed(stream_seed(seed, j)) for j in range(len(gbar))]
    out = []
    for i, shp in enumerate(shapes):
        d = torch.zeros(shp)
        for j, g in enumerate(gbar):
            u = torch.empty(shp).normal_(generator=gens[j])
            d += float(np.float32(g) / np.float32(len(gbar))) * (u if h is None else u / h[i].sqrt())
        out.append(d)
    return out


def test_diagonal_update_is_eq12_with_beta_on_old_h():
    params = [torch.zeros(5), torch.zeros(2, 3)]
    cur = Diagonal(beta=0.9, eps=1e-3).bind(params)
    rec = record([[0.5, -2.0, 1.0]])
    apply_record(params, cur, rec, lr=0.1, scratch=Scratch(params))
    delta = hand_delta(7, [0.5, -2.0, 1.0], [(5,), (2, 3)])
    for i in range(2):
        torch.testing.assert_close(params[i], -0.1 * delta[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cur.state[i], 0.9 * 1.0 + 0.1 * (delta[i] ** 2 + 1e-3), rtol=1e-5, atol=1e-7)
    # second round: directions are whitened by the H learned in round one
    h1 = [s.clone() for s in cur.state]
    x1 = [p.clone() for p in params]
    apply_record(params, cur, record([[1.0, 0.0, -1.0]], seeds=(9,)), lr=0.1, scratch=Scratch(params))
    delta2 = hand_delta(9, [1.0, 0.0, -1.0], [(5,), (2, 3)], h=h1)
    for i in range(2):
        torch.testing.assert_close(params[i], x1[i] - 0.1 * delta2[i], rtol=1e-5, atol=1e-6)


def test_local_steps_before_the_last_do_not_feed_h_by_default():
    params = [torch.zeros(4)]
    last = Diagonal(beta=0.5, eps=0).bind(params)
    apply_record(params, last, record([[3.0], [1.0]], seeds=(1, 2)), lr=0.0, scratch=Scratch(params))
    d_last = hand_delta(2, [1.0], [(4,)])[0]
    torch.testing.assert_close(last.state[0], 0.5 + 0.5 * d_last ** 2)
    every = Diagonal(beta=0.5, eps=0, feed="every").bind([torch.zeros(4)])
    apply_record([torch.zeros(4)], every, record([[3.0], [1.0]], seeds=(1, 2)), lr=0.0, scratch=Scratch(params))
    d_first = hand_delta(1, [3.0], [(4,)])[0]
    torch.testing.assert_close(every.state[0], 0.5 * (0.5 + 0.5 * d_first ** 2) + 0.5 * d_last ** 2)


def test_mean_of_squares_uses_client_gram():
    """Eq. 12 as written: the mean over clients of each client's squared update."""
    params = [torch.zeros(6)]
    cur = Diagonal(beta=0.0, eps=0.0, moment="mean_of_squares").bind(params)
    per_client = np.array([[[1.0, 2.0]], [[-1.0, 0.5]]], np.float32)  # [clients, tau, P]
    extra = cur.extra_scalars(per_client)
    assert extra.size == 3  # P(P+1)/2
    rec = RoundRecord(0, np.array([4], np.uint32), per_client.mean(0), extra, 2)
    apply_record(params, cur, rec, lr=0.0, scratch=Scratch(params))
    want = sum(hand_delta(4, list(g[0]), [(6,)])[0] ** 2 for g in per_client) / 2
    torch.testing.assert_close(cur.state[0], want, rtol=1e-4, atol=1e-6)


def test_block_size_one_equals_diagonal():
    p1, p2 = [torch.zeros(7), torch.zeros(3, 2)], [torch.zeros(7), torch.zeros(3, 2)]
    diag, block = Diagonal().bind(p1), BlockDiagonal(block_size=1).bind(p2)
    for r in range(5):
        rec = record([[1.0 + r, -0.5]], seeds=(r,))
        apply_record(p1, diag, rec, 0.1, Scratch(p1))
        apply_record(p2, block, rec, 0.1, Scratch(p2))
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(diag.flat(), block.flat(), rtol=1e-5, atol=1e-6)


def test_layer_scalar_is_mean_of_diagonal_moment():
    params = [torch.zeros(8), torch.zeros(2)]
    cur = LayerScalar(beta=0.0, eps=0.0).bind(params)
    apply_record(params, cur, record([[2.0]]), lr=0.0, scratch=Scratch(params))
    d = hand_delta(7, [2.0], [(8,), (2,)])
    for i in range(2):
        torch.testing.assert_close(cur.state[i], (d[i] ** 2).mean())


def test_non_positive_curvature_fails_loudly():
    params = [torch.zeros(3)]
    cur = Diagonal().bind(params)
    with pytest.raises(CurvatureError, match="non-positive"):
        cur.load_state_dict({"kind": "diagonal", "state": [torch.tensor([1.0, 0.0, 2.0])]})
    with pytest.raises(CurvatureError):
        Oracle([torch.tensor([1.0, -1.0, 1.0])]).bind(params)
    # eps = 0 with a NaN update: the EMA result is rejected, not used
    nan_rec = record([[float("nan")]])
    with pytest.raises(CurvatureError):
        apply_record(params, Diagonal(eps=0.0).bind(params), nan_rec, 0.1, Scratch(params))


def test_dense_oracle_whitens_exactly():
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    p = [torch.zeros(2)]
    cur = Oracle(a).bind(p)
    u = torch.randn(20000, 2)
    z = torch.stack([cur.precondition_(0, row.clone()) for row in u])
    torch.testing.assert_close(torch.cov(z.T), torch.linalg.inv(a), rtol=0.05, atol=0.02)


def test_a_curvature_kind_registered_once_is_configurable():
    """register_curvature is the one place a kind is added: the config accepts it, make_factory builds it with
    its own options, and a task without what it needs is refused."""
    from hiso.config import ConfigError, load_config
    from hiso.curvature import KINDS, Diagonal, register_curvature
    from hiso.run import build_federation

    class Halved(Diagonal):
        """HiSo's diagonal with an extra option (a test kind)."""
        kind = "halved"
        config_keys = {"shrink": "mix"}  # borrows curvature.mix as its own option

        def __init__(self, shrink: float = 0.5, **kw):
            super().__init__(**kw)
            self.shrink = shrink

    register_curvature(Halved)
    try:
        cfg = load_config(data={"method": "hiso", "curvature": {"kind": "halved", "mix": 0.3},
                                "task": {"name": "quadratic", "dim": 20}, "federation": {"rounds": 2}})
        fed, _ = build_federation(cfg)
        assert isinstance(fed.server.curvature, Halved) and fed.server.curvature.shrink == 0.3
        with pytest.raises(ConfigError, match="curvature.kind must be a registered kind"):
            load_config(data={"curvature": {"kind": "nope"}})
        with pytest.raises(ConfigError, match="needs a task that knows its Hessian"):
            load_config(data={"task": {"name": "digits"}, "curvature": {"kind": "oracle"}})
    finally:
        KINDS.pop("halved")
