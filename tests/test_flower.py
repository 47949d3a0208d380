"""federation.engine: flower: the same run over a real Flower deployment (SuperLink + SuperNodes on 127.0.0.1,
offline) equals the in-process simulator bit for bit: metrics, server model, curvature and round log, and
every client's replica after the final sync.  Each deployment takes about 5-10 s per round (SuperNode polling
and one ClientApp process per message), so the tests are few and marked slow."""
import json
import subprocess
import time

import pandas as pd
import pytest

from hiso.config import load_config
from hiso.results import MEASURED
from hiso.run import RunFailed, run

pytest.importorskip("flwr")
from hiso.flower.check import differences  # noqa: E402

pytestmark = pytest.mark.slow

BASE = {"method": "hiso", "seed": 3,
        "task": {"name": "quadratic", "dim": 100, "spectrum": "power", "effective_rank": 10.0, "heterogeneity": 0.3},
        "federation": {"num_clients": 3, "clients_per_round": 2, "rounds": 20, "perturbations": 5, "lr": 0.03},
        "run": {"eval_every": 5, "checkpoint_every": 5, "progress": False, "threads": 1}}
TRANSPORT = ["wall_seconds", "flower_bytes_down", "flower_bytes_up", "exchange_seconds", "exchange_started_at",
             "dropped_clients",
             *[f"client_{k}_seconds" for k in ("start", "load", "compute", "save")]]


def config(engine: str, run_sets: dict | None = None, **federation):
    return load_config(data={**BASE, "run": {**BASE["run"], **(run_sets or {})},
                             "federation": {**BASE["federation"], "engine": engine, **federation}})


def assert_same_run(sim, dep):
    a, b = pd.read_csv(sim / "metrics.csv"), pd.read_csv(dep / "metrics.csv")
    assert set(b.columns) - set(a.columns) == set(TRANSPORT) - set(MEASURED)
    assert not differences(sim, dep)  # metrics, round log, server model, curvature, every client's replica


def groups_alive(pgids: list[int]) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pgid="], capture_output=True, text=True).stdout.split()
    return sorted(set(pgids) & {int(x) for x in out})


def test_three_supernodes_equal_the_simulator_bitwise(tmp_path):
    # 8 rounds: two evaluations and checkpoints, and clients catching up on the rounds they missed
    def cfg8(engine):
        return config(engine, {"eval_every": 4, "checkpoint_every": 4}, rounds=8)
    run(cfg8("simulator"), tmp_path / "sim")
    from hiso.flower.deploy import deploy
    seen = {}

    def during(procs, folder, info):
        seen["pgids"] = [p.pid for _, p in procs.procs]
    deploy(cfg8("flower"), tmp_path / "dep", during=during)
    assert_same_run(tmp_path / "sim", tmp_path / "dep")
    outcome = json.loads((tmp_path / "dep/flower/outcome.json").read_text())
    assert outcome["replicas_equal_server"] == {"0": True, "1": True, "2": True}  # every client's replay
    m = pd.read_csv(tmp_path / "dep/metrics.csv")
    assert (m["flower_bytes_up"] > m["bytes_up"]).all() and (m["dropped_clients"] == "[]").all()
    assert (m["bytes_down_catchup"] > 0).any()
    assert len(seen["pgids"]) == 4 and not groups_alive(seen["pgids"])  # SuperLink, 3 SuperNodes: all gone


@pytest.mark.parametrize("task", [
    {"name": "digits", "alpha": 1.0},
    {"name": "rotten_tomatoes", "model": "tiny-llama", "trainable": "lora", "lora_rank": 2, "train_size": 40,
     "dev_size": 10, "test_size": 20, "max_length": 32}], ids=["digits", "tiny-llama-lora"])
def test_digits_and_a_lora_language_model_equal_the_simulator_bitwise(tmp_path, task):
    def cfg(engine):
        return load_config(data={**BASE, "task": task, "run": {**BASE["run"], "eval_every": 2},
                                 "federation": {**BASE["federation"], "rounds": 3, "lr": 0.01, "batch_size": 8,
                                                "engine": engine}})
    run(cfg("simulator"), tmp_path / "sim")
    from hiso.flower.deploy import deploy
    deploy(cfg("flower"), tmp_path / "dep")
    assert_same_run(tmp_path / "sim", tmp_path / "dep")
    outcome = json.loads((tmp_path / "dep/flower/outcome.json").read_text())
    assert all(outcome["replicas_equal_server"].values()) and len(outcome["replicas_equal_server"]) == 3
    # the SuperNodes inherited the portable variables (Flower loaded OpenBLAS before the suite): run.json says so
    kernels = json.loads((tmp_path / "dep/run.json").read_text())["numerics"]
    assert len(kernels["nodes"]) == 3 and kernels["nodes_bit_identical_across_cpus"]
    assert {n["blas_architecture"] for n in kernels["nodes"].values()} == {"Haswell"}


def test_a_corrupted_replay_fails_the_run(tmp_path):
    from hiso.flower.deploy import deploy
    with pytest.raises(RunFailed, match="replicas differ from the server"):
        deploy(config("flower", rounds=2), tmp_path / "dep", node_faults={1: " corrupt-replay=1e-3"})
    assert json.loads((tmp_path / "dep/flower/outcome.json").read_text())["status"] == "failed"


def test_a_malformed_upload_is_rejected_as_in_the_simulator(tmp_path):
    from hiso.flower.deploy import deploy
    cfg = config("flower", rounds=2)
    deploy(cfg, tmp_path / "dep", node_faults={0: " truncate-upload=3"})  # client 0's uploads lose 3 bytes
    def truncate(fed):
        orig = fed.upload_hook
        fed.upload_hook = lambda up: orig(up)[:-3] if up.client == 0 else orig(up)
    run(config("simulator", rounds=2), tmp_path / "sim", federation_hook=truncate)
    assert_same_run(tmp_path / "sim", tmp_path / "dep")
    m = pd.read_csv(tmp_path / "dep/metrics.csv")
    assert m["rejected"].sum() >= 1 and "malformed" in (tmp_path / "dep/flower/serverapp.log").read_text()


def test_a_killed_supernode_rejoins_and_the_run_equals_the_simulator_given_its_participation(tmp_path):
    from hiso.flower.deploy import start_supernode
    def config12(engine, **kw):
        return config(engine, {"checkpoint_every": 3}, rounds=12, **kw)
    cfg = config12("flower", round_timeout=20.0)

    def during(procs, folder, info):  # kill SuperNode 1 once round 3 is logged; restart it once a round dropped it
        deadline = time.time() + 600
        while time.time() < deadline and not _rounds_done(folder.parent) >= 3:
            time.sleep(0.5)
        procs.stop("node1", grace=0.0)
        while time.time() < deadline and "from client 1: no upload" not in _text(folder / "serverapp.log"):
            time.sleep(0.5)
        start_supernode(procs, folder, 1, info["parts"][1], info["link"], info["nodes"][1], info["env"])
    from hiso.flower.deploy import deploy
    deploy(cfg, tmp_path / "dep", during=during)
    m = pd.read_csv(tmp_path / "dep/metrics.csv")
    dropped = [json.loads(d) for d in m["dropped_clients"]]
    assert any(1 in d for d in dropped), "the killed client was never sampled while it was down"
    # (a live client slower than the round timeout on a loaded machine is dropped too: the simulator replays
    # whatever participation the deployment had)
    assert (m["rejected"] == m["dropped_clients"].map(lambda d: len(json.loads(d)))).all()
    run(config12("simulator", dropped_from=str(tmp_path / "dep/metrics.csv")), tmp_path / "sim")
    assert_same_run(tmp_path / "sim", tmp_path / "dep")
    outcome = json.loads((tmp_path / "dep/flower/outcome.json").read_text())
    assert outcome["replicas_equal_server"] == {"0": True, "1": True, "2": True}  # it caught up


def _text(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _rounds_done(out) -> int:
    try:
        return json.loads((out / "run.json").read_text()).get("rounds_done", 0) or 0
    except (OSError, ValueError):
        return 0
