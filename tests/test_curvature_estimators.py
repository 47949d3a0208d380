"""Scalar-only curvature estimators beyond HiSo's EMA: GlobalScalar, SecondDifference, Stein,
DampedOracle, the generalised payload (P second differences per step) and mu scaling."""
import numpy as np
import pytest
import torch
from test_replay import final_sync, run_verified

from hiso.config import ConfigError
from hiso.curvature import GlobalScalar, SecondDifference, Stein
from hiso.estimators import estimate
from hiso.perturb import Scratch, StepDirections, step_
from hiso.protocol import Upload
from hiso.run import build_federation
from hiso.tasks.quadratic import Quadratic, QuadraticOptions


def rotated_quadratic(dim=6, seed=3):
    return Quadratic(QuadraticOptions(dim=dim, spectrum="lognormal", sigma=1.0, rotate=True), num_clients=2, seed=seed)


@pytest.mark.parametrize("curv,fed", [
    ({"kind": "global_scalar"}, {}),
    ({"kind": "global_scalar", "feed": "every"}, {"local_steps": 3}),
    ({"kind": "second_difference"}, {"difference": "central"}),
    ({"kind": "second_difference", "feed": "every"}, {"difference": "central", "local_steps": 3}),
    ({"kind": "stein", "beta": 0.99}, {"difference": "central"}),
    ({"kind": "stein", "feed": "every", "beta": 0.99}, {"difference": "central", "local_steps": 2}),
    ({"kind": "damped_oracle"}, {}),
    ({"kind": "diagonal"}, {"mu_scale": "rms"}),
    ({"kind": "mixed", "mix": 0.5}, {}),
    ({"kind": "mixed", "mix": 0.3, "feed": "every"}, {"local_steps": 3}),
])
def test_new_estimators_replay_exactly(cfg_factory, curv, fed):
    fedn, diffs = run_verified(cfg_factory, 120, curvature=curv, federation={"perturbations": 3, **fed})
    assert max(diffs) <= 1e-6
    assert final_sync(fedn) <= 1e-6
    flat = fedn.server.curvature.flat()
    if curv["kind"] != "damped_oracle":  # learned: H moved away from H_0 = 1
        assert not torch.equal(flat, torch.ones_like(flat))
    assert float(fedn.server.params[0].abs().max()) > 0


def test_second_difference_payload_is_counted_and_validated(cfg_factory):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 30}, curvature={"kind": "stein"},
                      federation={"difference": "central", "perturbations": 4, "local_steps": 2, "rounds": 3})
    fedn, _ = build_federation(cfg)
    row = fedn.run_round()
    # 2 clients x (tau x P derivatives + tau x P second differences), 4 bytes each, independent of d
    assert row["bytes_up_scalars"] == 2 * (2 * 4 + 2 * 4) * 4
    assert row["forward_passes"] == 2 * 2 * (2 * 4 + 1)
    assert fedn.server.log[-1].extra.size == 4  # the last local step's P mean second differences (feed=last)
    # an upload without the declared second differences is rejected with a reason, not averaged
    seeds = fedn.server.current_seeds if fedn.server.current_round is not None else None
    assert seeds is None
    fedn.server.open_round(1, np.array([1, 2], np.uint32), [0, 1])
    assert not fedn.server.receive(Upload(1, 0, np.zeros((2, 4), np.float32)).encode(), 0)
    assert "expected 2x4+8" in fedn.server.rejected[-1][1]
    bad = Upload(1, 1, np.zeros((2, 4), np.float32), np.full(8, np.nan, np.float32))
    assert not fedn.server.receive(bad.encode(), 1)
    assert fedn.server.rejected[-1][1] == "non-finite scalar"


def test_second_difference_is_the_analytic_directional_curvature():
    """On a quadratic, [f(x+mu z) + f(x-mu z) - 2 f(x)] / (2 mu^2) = z^T A z / 2 for any mu."""
    task = rotated_quadratic()
    params = task.params()
    with torch.no_grad():
        params[0].normal_(generator=torch.Generator().manual_seed(0))
    h = torch.rand(6, generator=torch.Generator().manual_seed(1)) + 0.5
    cur = SecondDifference().bind(params)
    cur.state[0].copy_(h)
    dirs = StepDirections(11, 4, params, cur, Scratch(params))
    est = estimate(params, lambda: task.loss(0), dirs, mu=0.5, difference="central", second=True)
    a = torch.tensor(task.hessian_matrix(), dtype=torch.float64)
    for j in range(4):
        z = next(iter(dirs(j))).z.double()
        assert est.second[j] == pytest.approx(float(z @ a @ z) / 2, rel=1e-4)
    assert est.forward_passes == 9


def test_second_difference_update_is_hizoo_rule():
    params = [torch.zeros(5)]
    cur = SecondDifference(beta=0.9, eps=0.0).bind(params)
    h0 = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5])
    cur.state[0].copy_(h0)
    dirs = StepDirections(5, 2, params, cur, Scratch(params))
    zs = [next(iter(dirs(j))).z.clone() for j in range(2)]
    s = np.array([0.3, -0.7], np.float32)
    cur.begin_round()
    step_(params, dirs, [0.0, 0.0], 0.0, lambda i, start, d, z: cur.observe(i, d, z, s, 0, start), keep_directions=True)
    cur.end_round()
    u2 = [z.square() * h0 for z in zs]  # the raw draws
    want = 0.9 * h0 + 0.1 * h0 * (abs(0.3) * u2[0] + abs(-0.7) * u2[1]) / 2
    torch.testing.assert_close(cur.state[0], want)


def test_stein_estimate_is_unbiased_on_a_fixed_quadratic():
    """E[H * s (u^2 - 1)] = diag(A) for a dense (rotated) A, any positive H: the mean of single-sample
    estimates (beta = 0) lies within 4 standard errors of the true diagonal in every coordinate."""
    task = rotated_quadratic(dim=4)
    params = task.params()
    h = torch.rand(4, generator=torch.Generator().manual_seed(2)) + 0.5
    cur = Stein(beta=0.0, eps=0.0, floor=1e-6).bind(params)
    samples, seconds = [], []
    for seed in range(6000):
        cur.state[0].copy_(h)
        cur._after_update()
        dirs = StepDirections(seed, 1, params, cur, Scratch(params))
        est = estimate(params, lambda: task.loss(0), dirs, mu=1.0, difference="central", second=True)
        cur.begin_round()
        step_(params, dirs, [0.0], 0.0, lambda i, start, d, z: cur.observe(i, d, z, est.second, 0, start), keep_directions=True)
        cur.end_round()
        samples.append(cur.state[0].double().clone())
        seconds.append(float(est.second[0]))
    x = torch.stack(samples)
    mean, se = x.mean(0), x.std(0) / len(x) ** 0.5
    true = torch.tensor(np.diag(task.hessian_matrix()))
    assert bool(((mean - true).abs() < 4 * se).all()), (mean, true, se)
    # the check has power: the standard error is small against the entries, and dropping the "- 1" of
    # Stein's identity (the biased s u^2 estimate) is caught by the same criterion
    assert float((se / true).max()) < 0.2
    biased = x + h.double() * torch.tensor(seconds).unsqueeze(1)  # H s u^2 = H s (u^2 - 1) + H s
    bmean, bse = biased.mean(0), biased.std(0) / len(x) ** 0.5
    assert not bool(((bmean - true).abs() < 4 * bse).all())


def test_stein_floor_is_explicit_and_reported():
    params = [torch.zeros(4)]
    cur = Stein(floor=0.5).bind(params)
    cur.state[0].copy_(torch.tensor([1.0, -1.0, 2.0, 0.1]))
    cur._after_update()
    rms = float(torch.tensor([1.0, -1.0, 2.0, 0.1]).square().mean().sqrt())
    assert cur.floor_value == pytest.approx(0.5 * rms)
    assert cur.clamped_fraction == 0.5
    torch.testing.assert_close(cur.diagonal(0), torch.tensor([1.0, 0.5 * rms, 2.0, 0.5 * rms]))


def test_global_scalar_is_the_mean_moment_over_all_tensors():
    params = [torch.zeros(3), torch.zeros(2, 2)]
    cur = GlobalScalar(beta=0.5, eps=0.0).bind(params)
    deltas = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1.0, 1.0], [0.0, 2.0]])]
    cur.begin_round()
    for i, d in enumerate(deltas):
        cur.observe(i, d, None, None, 0)
    cur.end_round()
    mean_sq = (1 + 4 + 9 + 1 + 1 + 0 + 4) / 7
    assert float(cur.state[0]) == pytest.approx(0.5 + 0.5 * mean_sq)
    torch.testing.assert_close(cur.diagonal(1), torch.full((2, 2), 0.5 + 0.5 * mean_sq))


def test_damped_oracle_adds_delta_lambda_max(cfg_factory):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 20, "spectrum": "lognormal"},
                      curvature={"kind": "damped_oracle", "damping": 0.25})
    fedn, task = build_federation(cfg)
    want = torch.tensor(task.lam, dtype=torch.float32) + 0.25 * float(task.lam.max())
    torch.testing.assert_close(fedn.server.curvature.flat(), want)


def test_mu_scale_rms_keeps_the_perturbation_norm(cfg_factory):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 50}, curvature={"kind": "diagonal"},
                      federation={"mu_scale": "rms", "mu": 1e-2})
    fedn, _ = build_federation(cfg)
    fedn.server.curvature.state[0].fill_(4.0)  # H^{-1/2} = 1/2: directions are half as long
    assert fedn.step_mu() == pytest.approx(2e-2)
    assert fedn.run_round()["mu"] == pytest.approx(2e-2)


@pytest.mark.parametrize("curv,fed,msg", [
    ({"kind": "stein"}, {}, "difference: central"),
    ({"kind": "second_difference", "moment": "mean_of_squares"}, {"difference": "central"}, "square_of_mean"),
    ({"kind": "stein", "floor": 0.0}, {"difference": "central"}, "curvature.floor"),
    ({"kind": "damped_oracle", "damping": -1.0}, {}, "curvature.damping"),
    ({"kind": "mixed", "mix": 1.5}, {}, "curvature.mix"),
])
def test_bad_estimator_configs_fail_clearly(cfg_factory, curv, fed, msg):
    with pytest.raises(ConfigError, match=msg):
        cfg_factory(task={"name": "quadratic", "dim": 10}, curvature=curv, federation=fed)


def test_damped_oracle_needs_a_known_hessian(cfg_factory):
    with pytest.raises(ConfigError, match="knows its Hessian"):
        cfg_factory(task={"name": "digits"}, curvature={"kind": "damped_oracle"})


def test_hutchinson_diagonal_matches_exact_hessian_on_digits():
    from hiso.diagnostics import true_diagonal
    from hiso.tasks.digits import Digits, DigitsOptions
    task = Digits(DigitsOptions(channels=2), num_clients=2, seed=0)
    batch = task.batch(0, np.random.default_rng(0), 64)
    params = task.params()
    fc = params[-2]  # the last linear layer's weight: exact diagonal by autograd, entry by entry (small)
    est = true_diagonal(task, samples=400, batch=batch)
    offset = sum(p.numel() for p in params[:-2])
    with torch.enable_grad():
        g = torch.autograd.grad(task.grad_loss(batch), fc, create_graph=True)[0].reshape(-1)
        exact = torch.stack([torch.autograd.grad(g[k], fc, retain_graph=True)[0].reshape(-1)[k] for k in range(20)])
    got = est[offset:offset + 20]
    # Hutchinson on the last layer: v_k^2 = 1, off-diagonal terms average out (block is near diagonal)
    torch.testing.assert_close(got, exact.double(), rtol=0.25, atol=2e-3)


def test_agreement_and_zeta_on_known_vectors():
    from hiso.diagnostics import agreement, zeta
    true = torch.tensor([1.0, 2.0, 4.0, 8.0])
    a = agreement(3 * true, true)
    assert a["spearman"] == pytest.approx(1.0) and a["log10_scale"] == pytest.approx(np.log10(3))
    assert a["log10_spread"] == pytest.approx(0.0, abs=1e-12)
    assert agreement(true.flip(0), true)["spearman"] == pytest.approx(-1.0)
    z = zeta(true, true)  # exact whitening: every coordinate counts once
    assert z["zeta"] == pytest.approx(4.0) and z["eff_rank_whitened"] == pytest.approx(4.0)
    assert zeta(torch.ones(4), true)["zeta"] == pytest.approx(15.0)  # H = I: the trace


def test_mixed_spans_hiso_and_one_learned_number(cfg_factory):
    """mix = 0 is HiSo bit for bit; mix = 1 preconditions with one number, the mean of HiSo's diagonal;
    in between, H = (1 - w) M + w mean(M) with mean(M) of the state at the round's start."""
    def fed_of(curv, rounds=40):
        fedn, _ = build_federation(cfg_factory(task={"name": "quadratic", "dim": 50}, curvature=curv,
                                               federation={"rounds": rounds, "perturbations": 3}))
        for _ in range(rounds):
            fedn.run_round()
        return fedn
    hiso, mix0 = fed_of({"kind": "diagonal"}), fed_of({"kind": "mixed", "mix": 0.0})
    assert torch.equal(hiso.server.params[0], mix0.server.params[0])
    assert torch.equal(hiso.server.curvature.flat(), mix0.server.curvature.flat())
    one = fed_of({"kind": "mixed", "mix": 1.0}).server.curvature
    assert torch.allclose(one.flat(), torch.full_like(one.flat(), one.mean_value))
    assert not torch.allclose(one.state[0], torch.full_like(one.state[0], one.mean_value))  # M keeps its shape
    half = fed_of({"kind": "mixed", "mix": 0.25}).server.curvature
    m = half.state[0].double()
    torch.testing.assert_close(half.flat().double(), 0.75 * m + 0.25 * m.mean(), rtol=1e-6, atol=0)


def test_another_kinds_option_is_named_in_a_warning(cfg_factory, caplog):
    """Stein's floor set for HiSo's diagonal changes nothing; the config says so instead of silently ignoring it."""
    with caplog.at_level("WARNING", logger="hiso.curvature"):
        cfg = cfg_factory(task={"name": "quadratic", "dim": 10}, curvature={"kind": "diagonal", "floor": 0.1})
    assert ("curvature.floor: 0.1 is an option of kind stein; method hiso (kind diagonal) does not read it, so it is "
            "left out of the run's identity") in caplog.text
    assert cfg.hash() == cfg_factory(task={"name": "quadratic", "dim": 10}, curvature={"kind": "diagonal"}).hash()
