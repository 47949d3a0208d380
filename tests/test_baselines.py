"""Every registered method: progress on a tiny problem, measured bytes, resume, and the extension point."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from hiso.config import ConfigError, load_config
from hiso.methods import METHODS, register_method
from hiso.protocol import VEC_HEAD, VectorMessage
from hiso.results import reproducible
from hiso.run import run

QUAD = {"name": "quadratic", "dim": 50, "effective_rank": 5}
LR = {"fedavg": 0.3, "fedadam": 0.02, "fedyogi": 0.02, "fedadagrad": 0.05, "fedzo": 0.02, "mezo": 0.02,
      "mezo_momentum": 0.005, "zo_adam": 0.02, "hizoo": 0.02, "fo": 0.3, "rmsprop_zo": 0.005, "hiso": 0.01,
      "decomfl": 0.02, "fedkseed": 0.02}
VECTOR = {"fedavg", "fedadam", "fedyogi", "fedadagrad", "fedzo"}
SINGLE = {"mezo", "mezo_momentum", "zo_adam", "hizoo", "fo"}


def cfg(method, rounds=40, **fed):
    return load_config(data={"method": method, "task": QUAD, "federation": {"rounds": rounds, "lr": LR[method], **fed},
                             "run": {"progress": False, "eval_every": 20}})


def test_every_registered_method_is_covered():
    load_config(data={})  # imports the baselines
    assert set(LR) <= set(METHODS)


@pytest.mark.parametrize("method", sorted(LR))
def test_method_makes_progress_and_counts_its_bytes(method):
    m = run(cfg(method)).metrics
    sub = m["rel_suboptimality"].dropna().tolist()
    assert sub[-1] < sub[0] < 1.0 and sub[-1] < 0.95
    d, clients = 50, 2
    if method in VECTOR:  # the full model down and the full delta up, per sampled client
        assert (m["bytes_up"] == clients * VectorMessage.wire_size(d)).all()
        assert (m["bytes_down"] == clients * VectorMessage.wire_size(d)).all()
    elif method in SINGLE:
        assert (m["bytes_up"] == 0).all() and (m["bytes_down"] == 0).all()
    else:  # scalar-only: independent of d
        assert (m["bytes_up_scalars"] == clients * 4 * 5).all()
    # forward passes per round: 2 clients x (P+1) for federated ZO, P+1 single-party ZO, 2P+1 HiZOO, 1 per
    # first-order step (x 2 clients when federated)
    passes = {"hizoo": 11, "fo": 1, "fedavg": 2, "fedadam": 2, "fedyogi": 2, "fedadagrad": 2, "mezo": 6,
              "mezo_momentum": 6, "zo_adam": 6}.get(method, 12)
    assert (m["forward_passes"] == passes).all()


def test_vector_message_is_really_4d_bytes():
    v = np.arange(1000, dtype=np.float32)
    data = VectorMessage(3, 1, v).encode()
    assert len(data) == VectorMessage.wire_size(1000) == VEC_HEAD.size + 4000
    assert np.array_equal(VectorMessage.decode(data).values, v)


@pytest.mark.parametrize("method", ["fedadam", "zo_adam", "fedzo"])
def test_stateful_baselines_resume_exactly(method, tmp_path):
    c = cfg(method, rounds=30)
    c.run.checkpoint_every = 10
    full = run(c, tmp_path / "a").metrics
    run(c, tmp_path / "b", stop_after=17)
    resumed = run(c, tmp_path / "b").metrics
    pd.testing.assert_frame_equal(reproducible(full), reproducible(resumed))


def test_method_options_are_validated():
    with pytest.raises(ConfigError, match=r"unknown config key 'method_options\.beta3'"):
        load_config(data={"method": "fedadam", "method_options": {"beta3": 0.5}})
    with pytest.raises(ConfigError, match="not a registered method"):
        load_config(data={"method": "fedsgd"})
    with pytest.raises(ConfigError, match="takes no options"):
        load_config(data={"method": "hiso", "method_options": {"x": 1}})
    with pytest.raises(ConfigError, match="contradicts"):
        load_config(data={"method": "rmsprop_zo", "curvature": {"kind": "diagonal"}})


def test_rmsprop_zo_samples_isotropically_but_scales_the_update():
    from hiso.curvature import RMSProp
    p = [torch.zeros(4)]
    c = RMSProp(power=1.0).bind(p)
    c.state = [torch.tensor([4.0, 1.0, 0.25, 1.0])]
    u = torch.randn(4)
    assert torch.equal(c.precondition_(0, u.clone()), u)
    torch.testing.assert_close(c.scale_update(0, torch.ones(4)), torch.tensor([0.25, 1.0, 4.0, 1.0]))


# --- the extension point: a baseline registered from outside the package ---------------------------

@dataclass
class SignOptions:
    scale: float = 1.0


class SignDescent:
    """A toy single-party method: x <- x - lr * scale * sign(grad) on the quadratic."""

    def __init__(self, cfg, task, opts):
        self.task, self.opts, self.lr, self.x = task, opts, cfg.federation.lr, task.params()[0]
        self.x.requires_grad_(True)
        self.rounds_done = 0

    def global_params(self):
        return [self.x]

    def load_server_model(self):
        pass

    def run_round(self):
        loss = self.task.grad_loss(0)
        (g,) = torch.autograd.grad(loss, [self.x])
        with torch.no_grad():
            self.x.sub_(self.lr * self.opts.scale * g.sign())
        self.rounds_done += 1
        return {"round": self.rounds_done, "train_loss": float(loss.detach()), "bytes_up": 0, "bytes_down": 0,
                "forward_passes": 1}

    def state_dict(self):
        return {"x": self.x.detach().clone(), "rounds": self.rounds_done}

    def load_state_dict(self, sd):
        with torch.no_grad():
            self.x.copy_(sd["x"])
        self.rounds_done = sd["rounds"]


def test_a_baseline_registered_from_outside_runs_through_the_runner(tmp_path):
    register_method("toy_sign", lambda c, task, opts: SignDescent(c, task, opts), SignOptions)
    try:
        c = load_config(data={"method": "toy_sign", "method_options": {"scale": 0.5}, "task": QUAD,
                              "federation": {"rounds": 20, "lr": 0.05}, "run": {"progress": False, "eval_every": 10}})
        res = run(c, tmp_path)
        sub = res.metrics["rel_suboptimality"].dropna()
        assert len(res.metrics) == 20 and sub.iloc[-1] < sub.iloc[0]
        assert (tmp_path / "metrics.csv").exists()
    finally:
        METHODS.pop("toy_sign")


def test_fedkseed_catch_up_is_o_of_k_and_replays_to_rounding():
    from hiso.run import build_federation
    c = load_config(data={"method": "fedkseed", "method_options": {"pool_size": 16}, "task": QUAD,
                          "federation": {"rounds": 200, "lr": 0.02, "verify_replay": True, "perturbations": 5},
                          "run": {"progress": False}})
    fed, _ = build_federation(c)
    rows = [fed.run_round() for _ in range(200)]
    assert max(r["replay_max_abs_diff"] for r in rows) <= 1e-5
    assert all(set(int(s) for s in rec.seeds) <= set(int(s) for s in fed.pool) for rec in fed.server.log)
    # every downlink with a catch-up carries exactly K x P floats, however many rounds were missed
    catchups = {r["bytes_down_catchup"] for r in rows}
    assert catchups <= {0, 16 * 5 * 4, 2 * 16 * 5 * 4}
    assert 2 * 16 * 5 * 4 in catchups


def test_the_fp32_upload_codec_measures_what_the_fast_path_counts():
    """VectorFederation counts a default fp32 upload without building it; the same upload really encoded and
    decoded (a subclass that routes it through encode_upload / decode_upload) gives the same bytes and the same
    model, bit for bit."""
    from baselines.common import VectorFederation
    from baselines.fedzo import FedZO

    class EncodedFedZO(FedZO):
        def encode_upload(self, r, client, delta):
            return VectorFederation.encode_upload(self, r, client, delta)

    register_method("fedzo_encoded", lambda cfg, task, opts: EncodedFedZO(cfg, task, opts), weight_decay=True)
    try:
        data = {"task": {"name": "digits"}, "federation": {"rounds": 6, "lr": 0.03},
                "run": {"progress": False, "eval_every": 3}}
        plain = run(load_config(data={**data, "method": "fedzo"}))
        encoded = run(load_config(data={**data, "method": "fedzo_encoded"}))
        assert encoded.federation.compresses() and not plain.federation.compresses()
        cols = ["train_loss", "accuracy", "bytes_up", "bytes_up_scalars", "bytes_down"]
        assert plain.metrics[cols].equals(encoded.metrics[cols])
    finally:
        METHODS.pop("fedzo_encoded")
