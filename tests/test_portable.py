"""The portable generator (hiso/portable.py): N(0, 1) within tested tolerances, and the same bits in any chunking
and either layout; a portable run is the same run whatever its chunk, so a chunk change is a no-op."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from hiso.curvature import make_factory
from hiso.layout import trainable
from hiso.perturb import Scratch, directions, stream_seed
from hiso.portable import normal_
from hiso.results import reproducible
from hiso.run import build_federation, run

N = 1 << 20
DIGITS = {"task": {"name": "digits", "alpha": 0.5}, "method": "hiso",
          "federation": {"num_clients": 6, "clients_per_round": 2, "local_steps": 2, "perturbations": 3,
                         "lr": 1e-3, "batch_size": 16, "rounds": 12},
          "run": {"checkpoint_every": 4, "eval_every": 4, "progress": False}}


def draw(seed: int, j: int, n: int = N, start: int = 0) -> np.ndarray:
    return normal_(torch.empty(n), stream_seed(seed, j), start).numpy().astype(np.float64)


def test_moments_and_tails_are_those_of_a_standard_normal():
    z = draw(3, 0)
    se = 1 / np.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * np.sqrt(2) * se
    assert abs(stats.skew(z)) < 5 * np.sqrt(6) * se
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24) * se
    for t in (1.0, 2.0, 3.0, 4.0):  # two-sided tail mass, within 5 binomial standard errors
        p = 2 * stats.norm.sf(t)
        assert abs((np.abs(z) > t).mean() - p) < 5 * np.sqrt(p * (1 - p) / N), t
    assert np.abs(z).max() < 4.7  # truncated beyond the outer bins (probability 2^-16 each side)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.normaltest(z).pvalue > 1e-3


@pytest.mark.parametrize("other", [(3, 1), (4, 0), (2, 0)])
def test_streams_of_neighbouring_directions_and_seeds_are_independent(other):
    a, b = draw(3, 0), draw(*other)
    lim = 5 / np.sqrt(N)
    assert abs(np.corrcoef(a, b)[0, 1]) < lim
    assert abs(np.corrcoef(a * a, b * b)[0, 1]) < lim  # not only uncorrelated: no dependence in the squares
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < lim  # neighbouring entries of one stream


def test_an_entry_depends_on_its_index_only():
    whole = draw(5, 2, 4096, start=(1 << 31) - 1000)  # crosses a 2^31 block boundary
    parts = np.concatenate([draw(5, 2, 1000, start=(1 << 31) - 1000), draw(5, 2, 3096, start=1 << 31)])
    assert np.array_equal(whole, parts)


@pytest.mark.parametrize("kind", ["identity", "diagonal"])
def test_same_bits_in_three_chunkings_and_both_layouts(cfg_factory, kind):
    cfg = cfg_factory(**{k: v for k, v in DIGITS.items() if k != "run"}, curvature={"kind": kind})
    _, task = build_federation(cfg)
    params = [p.detach().clone() for p in task.params()]
    got = []
    for layout, chunk in (("tensors", 64), ("tensors", 256), ("tensors", 1 << 18), ("flat", 256), ("flat", 1 << 26)):
        work = trainable([p.clone() for p in params], layout)
        curvature = make_factory(cfg.curvature, task)(work)
        if kind == "diagonal":  # the same non-trivial H in every layout
            torch.manual_seed(0)
            h = torch.rand(sum(p.numel() for p in params)) + 0.5
            off = 0
            for s in curvature.state:
                s.copy_(h[off:off + s.numel()].view(s.shape))
                off += s.numel()
        scratch = Scratch(work, chunk, "portable")
        z = torch.cat([q.z.clone().reshape(-1) for q in directions(11, 3, work, curvature, scratch)])
        got.append(z)
    assert all(torch.equal(got[0], z) for z in got[1:])
    assert got[0].numel() == sum(p.numel() for p in params) and float(got[0].std()) > 0.1


def test_a_portable_run_is_the_same_run_in_any_chunk_and_resumes_across_chunks(cfg_factory, tmp_path):
    def cfg(chunk):
        return cfg_factory(**DIGITS, perturb={"generator": "portable", "chunk": chunk})
    full = run(cfg(256), tmp_path / "full").metrics
    other = run(cfg(1024), tmp_path / "other").metrics
    pd.testing.assert_frame_equal(reproducible(full), reproducible(other), check_exact=True)
    assert cfg(256).hash() != cfg(1024).hash()  # another config file, but the same run (identity without the chunk)
    assert run(cfg(256), tmp_path / "resumed", stop_after=6).status == "interrupted"
    resumed = run(cfg(512), tmp_path / "resumed").metrics  # a chunk change is a no-op: allowed, same numbers
    pd.testing.assert_frame_equal(reproducible(full), reproducible(resumed), check_exact=True)
    stream = json.loads((tmp_path / "resumed" / "run.json").read_text())["stream"]
    assert stream["generator"] == "portable"


def test_portable_flat_layout_replays_bit_exactly(cfg_factory):
    cfg = cfg_factory(**{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 200, "verify_replay": True}},
                      perturb={"generator": "portable", "layout": "flat", "chunk": 256})
    fed, _ = build_federation(cfg)
    assert max(fed.run_round()["replay_max_abs_diff"] for _ in range(200)) == 0.0
