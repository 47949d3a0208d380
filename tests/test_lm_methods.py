"""Every method of the lm tier on a LoRA language model (tiny random LLaMA, the real text-task path): it trains
the adapters only, leaves the frozen base bit for bit, and its wire bytes are those of its protocol on the
adapters (vector methods send 4 bytes per adapter weight, scalar-only methods a few scalars)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hiso.config import load_config
from hiso.protocol import VectorMessage
from hiso.run import build_federation

_TIER = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows/config/lm.yaml").read_text())
LM_TIER_METHODS = {  # workflows/config/lm.yaml's methods: their method and federation overrides
    spec["method"]: {k.removeprefix("federation."): v for k, v in spec.items() if k.startswith("federation.")}
    for spec in _TIER["experiments"]["lm-rotten-tomatoes"]["methods"].values()}


def lora_config(method: str, **federation):
    return load_config(data={"method": method,
                             "task": {"name": "rotten_tomatoes", "model": "tiny-llama", "trainable": "lora",
                                      "lora_rank": 2, "train_size": 48, "dev_size": 8, "test_size": 16},
                             "federation": {"rounds": 2, "batch_size": 4, "lr": 1e-2, "perturbations": 2,
                                            "num_clients": 3, "clients_per_round": 2, **federation},
                             "run": {"progress": False}})


@pytest.mark.parametrize("method", sorted(LM_TIER_METHODS))
def test_lm_tier_method_trains_the_adapters_only(method):
    cfg = lora_config(method, **LM_TIER_METHODS[method])
    fed, task = build_federation(cfg)
    named = dict(task.model.named_parameters())
    base = {n: p.detach().clone() for n, p in named.items() if "lora" not in n}
    adapters = task.params()
    d = sum(p.numel() for p in adapters)
    assert 0 < d < sum(p.numel() for p in named.values()) / 50
    assert {id(p) for p in adapters} == {id(p) for n, p in named.items() if "lora" in n}
    before = [p.detach().clone() for p in adapters]
    rows = [fed.run_round() for _ in range(2)]
    fed.load_server_model()
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert all(torch.equal(p, base[n]) for n, p in task.model.named_parameters() if n in base), \
        "the frozen base moved"
    moved = sum(float((a - b).abs().sum()) for a, b in zip(fed.global_params(), before))
    assert moved > 0, "no adapter moved in two rounds"
    assert np.isfinite(task.evaluate()["test_loss"])
    up = rows[0].get("bytes_up", 0)
    if method in ("fedzo", "fedavg", "fedadam", "fedyogi", "fedadagrad"):  # the adapters' d-float delta per client
        assert up == 2 * VectorMessage.wire_size(d)
    elif method == "mezo":  # one party: nothing travels
        assert up == 0
    else:  # seeds and P scalars per client
        assert 0 < up < 200


def test_fedkseed_draws_its_seeds_from_the_pool_and_catches_up_on_an_lm():
    """FedKSeed on a LoRA model: every round's seeds come from the K-seed pool, and a client that missed rounds
    catches up from K x P accumulated coefficients to the server's adapters (float rounding)."""
    cfg = load_config(data={"method": "fedkseed", "method_options": {"pool_size": 8},
                            "task": {"name": "rotten_tomatoes", "model": "tiny-llama", "trainable": "lora",
                                     "lora_rank": 2, "train_size": 48, "dev_size": 8, "test_size": 16},
                            "federation": {"rounds": 4, "batch_size": 4, "lr": 1e-2, "perturbations": 2,
                                           "num_clients": 4, "clients_per_round": 1, "verify_replay": True},
                            "run": {"progress": False}})
    fed, _ = build_federation(cfg)
    pool = {int(s) for s in fed.pool}
    for _ in range(4):
        row = fed.run_round()
        assert {int(s) for s in fed.server.log[-1].seeds} <= pool
        assert row["replay_max_abs_diff"] <= 1e-5
