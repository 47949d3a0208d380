"""The worked example of docs/extending.md, ZO-SignSGD with majority vote (baselines/zo_signsgd.py): it learns,
its uploads are the bits it says, the server follows the vote, it resumes and repeats exactly, and its own check
refuses a bad option before compute."""
import math

import numpy as np
import pytest
import torch

from hiso.config import ConfigError, load_config
from hiso.protocol import VectorMessage
from hiso.run import build_federation, run

DIGITS = {"method": "zo_signsgd", "task": {"name": "digits", "alpha": 1.0},
          "federation": {"rounds": 60, "lr": 0.05, "perturbations": 5, "mu": 1e-3, "batch_size": 32},
          "run": {"progress": False, "eval_every": 20, "checkpoint_every": 20}}


def test_it_learns_digits_with_one_bit_per_coordinate_up():
    res = run(load_config(data=DIGITS))
    acc = res.metrics["accuracy"].dropna()
    assert acc.iloc[-1] > res.initial_eval["accuracy"] + 0.1  # from below chance (0.03) to well above it
    assert res.metrics["train_loss"].iloc[-5:].mean() < res.metrics["train_loss"].iloc[:5].mean() - 0.1
    d = res.federation.d
    row = res.metrics.iloc[0]
    assert row["bytes_up"] == 2 * (20 + math.ceil(d / 8))  # two clients, each a 20-byte header + d bits
    assert row["bytes_up_scalars"] == 2 * math.ceil(d / 8)
    assert row["bytes_down"] == 2 * VectorMessage.wire_size(d) == 2 * (20 + 4 * d)  # the full model down


def test_the_server_steps_along_the_sign_of_the_vote():
    fed, _ = build_federation(load_config(data=DIGITS))
    before = [p.clone() for p in fed.server]
    seen = []
    real = fed.decode_upload
    fed.decode_upload = lambda data, r, c: (seen.append(torch.cat([x.reshape(-1) for x in real(data, r, c)])),
                                             real(data, r, c))[1]
    fed.run_round()
    vote = torch.sign(sum(seen))
    moved = torch.cat([(b - a).reshape(-1) for b, a in zip(before, fed.server)])
    assert len(seen) == 2 and set(torch.unique(seen[0]).tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(moved, fed.server_lr * vote)


def test_it_resumes_and_repeats_bit_for_bit(tmp_path):
    cfg = load_config(data=DIGITS)
    whole = run(cfg, tmp_path / "a").metrics
    run(cfg, tmp_path / "b", stop_after=30)
    resumed = run(cfg, tmp_path / "b").metrics
    cols = ["train_loss", "accuracy", "bytes_up"]
    assert np.array_equal(whole[cols].to_numpy(), resumed[cols].to_numpy(), equal_nan=True)


def test_its_own_check_refuses_a_bad_option_before_compute():
    with pytest.raises(ConfigError, match=r"method zo_signsgd: method_options.server_lr must be > 0, got -1.0"):
        load_config(data={**DIGITS, "method_options": {"server_lr": -1.0}})
