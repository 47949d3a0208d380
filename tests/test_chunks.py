"""Directions are drawn and applied in pieces of at most perturb.CHUNK entries (bounded scratch memory).
On CPU the piece size must not change a single bit of any run: the same model, curvature and metrics."""
import pytest
import torch

from hiso import perturb
from hiso.curvature import Diagonal
from hiso.perturb import Piece, Scratch, StepDirections, pieces
from hiso.run import build_federation

QUAD = {"name": "quadratic", "dim": 970, "spectrum": "lognormal", "sigma": 1.0}  # 970 = 15 * 64 + 10
DIGITS = {"name": "digits", "alpha": 0.5}  # tensors of 36, 4, 288, 8, 320, 10 entries


def test_pieces_cover_the_tensor_in_multiples_of_16_without_short_tails():
    for n, chunk in [(970, 64), (1000, 64), (64, 64), (65, 64), (80, 64), (5, 64), (10**6 + 3, 2**18)]:
        cuts = list(pieces(n, chunk))
        assert cuts[0][0] == 0 and cuts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
        assert all(stop - start == chunk for start, stop in cuts[:-1])
        assert len(cuts) == 1 or cuts[-1][1] - cuts[-1][0] >= 16
    with pytest.raises(ValueError, match="multiple of 16"):
        Scratch([torch.zeros(3)], chunk=100)


def test_chunked_draw_equals_whole_tensor_draw():
    p = [torch.zeros(970), torch.zeros(37, 29)]
    cur = Diagonal().bind(p)
    cur.state = [torch.rand(970) + 0.5, torch.rand(37, 29) + 0.5]
    whole = [q.z.clone() for q in StepDirections(3, 2, p, cur, Scratch(p, chunk=2**20))(1)]
    parts = [Piece(q.i, q.start, q.z.clone()) for q in StepDirections(3, 2, p, cur, Scratch(p, chunk=64))(1)]
    assert len(parts) == 15 + 17 and max(q.z.numel() for q in parts) == 64 + 10
    for i in range(2):
        assert torch.equal(torch.cat([q.z for q in parts if q.i == i]), whole[i])


def run_rows(cfg_factory, monkeypatch, chunk, rounds, **sections):
    monkeypatch.setattr(perturb, "CHUNK", chunk)
    fedn, _ = build_federation(cfg_factory(**sections))
    rows = [fedn.run_round() for _ in range(rounds)]
    state = [p.clone() for p in fedn.global_params()]
    curv = getattr(getattr(fedn, "server", None), "curvature", None) or getattr(fedn, "curv", None)
    return rows, state, curv


CASES = {
    "decomfl": dict(method="decomfl"),
    "hiso": dict(method="hiso"),
    "hiso-every-tau3": dict(method="hiso", curvature={"feed": "every"}, federation={"local_steps": 3}),
    "hiso-mean-of-squares": dict(method="hiso", curvature={"moment": "mean_of_squares"}),
    "second-difference": dict(method="hiso", curvature={"kind": "second_difference"},
                              federation={"difference": "central"}),
    "stein": dict(method="hiso", curvature={"kind": "stein", "floor": 0.1}, federation={"difference": "central"}),
    "mixed": dict(method="hiso", curvature={"kind": "mixed", "mix": 0.5}),
    "rmsprop-zo": dict(method="rmsprop_zo"),
    "mu-rms": dict(method="hiso", federation={"mu_scale": "rms"}),
    "fedzo-tau2": dict(method="fedzo", federation={"local_steps": 2}),
    "zo-adam": dict(method="zo_adam"),
    "mezo-momentum": dict(method="mezo_momentum"),
    "hizoo": dict(method="hizoo"),
    "verified-replay": dict(method="hiso", federation={"verify_replay": True, "local_steps": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("task", ["quadratic", "digits"])
def test_piece_size_changes_no_bit(cfg_factory, monkeypatch, case, task):
    spec = dict(CASES[case])
    fed = {"num_clients": 4, "clients_per_round": 2, "lr": 1e-3 if task == "quadratic" else 3e-3,
           "perturbations": 3, "batch_size": 16, **spec.pop("federation", {})}
    sections = dict(task=QUAD if task == "quadratic" else DIGITS, federation=fed, **spec)
    rows_a, x_a, h_a = run_rows(cfg_factory, monkeypatch, 64, 6, **sections)
    rows_b, x_b, h_b = run_rows(cfg_factory, monkeypatch, 2**20, 6, **sections)
    assert rows_a == rows_b
    assert all(torch.equal(a, b) for a, b in zip(x_a, x_b, strict=True))
    if h_a is not None:
        assert h_a.equals(h_b)
    # not vacuous: the model moved, and with chunk 64 some tensor really was cut into pieces
    x0, _ = build_federation(cfg_factory(**sections))
    assert any(not torch.equal(a, b) for a, b in zip(x_a, x0.global_params()))
    assert max(p.numel() for p in x_a) > 64
