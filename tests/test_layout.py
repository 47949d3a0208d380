"""The flat layout (the CUDA default, hiso/layout.py) run on CPU: the exact code path a GPU takes.

Replay and resume stay bit-exact, the restore folded into the next perturbation changes the losses by float
rounding only, and a run is never continued under another stream (layout, chunk, device or generator output).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hiso.layout import chunk_of, fingerprint, flatten_, mismatch, resolve, trainable
from hiso.numerics import cpu
from hiso.perturb import CHUNK, FLAT_CHUNK
from hiso.protocol import RoundStart
from hiso.results import reproducible
from hiso.run import build_federation, run
from hiso.rundir import RunDirError

ROOT = Path(__file__).resolve().parents[1]
# digits: a small CNN (six tensors), drawn in pieces of 256 entries of its flat buffer
DIGITS = {"task": {"name": "digits", "alpha": 0.5}, "perturb": {"layout": "flat", "chunk": 256},
          "federation": {"num_clients": 6, "clients_per_round": 2, "local_steps": 3, "perturbations": 5,
                         "lr": 1e-3, "batch_size": 16}}


def final_sync(fed) -> float:
    """Bring every client up to date through the real wire format (the run's chunk); the worst difference."""
    worst = 0.0
    for c in fed.clients:
        msg = RoundStart.decode(RoundStart(len(fed.server.log), np.zeros(1, np.uint32),
                                           fed.server.log[c.synced:]).encode())
        fed.replay(c, msg, fed.new_scratch(c.params))
        worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(c.params, fed.server.params, strict=True)))
        assert c.curvature.equals(fed.server.curvature), f"client {c.id} curvature differs"
    return worst


def no_wall(df):
    return reproducible(df)


def test_flatten_rehomes_tensors_as_views_of_one_buffer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x = torch.randn(7, 5)
    before = model(x)
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    (buf,) = flatten_(params)
    assert buf.numel() == sum(v.numel() for v in values) and buf.is_contiguous()
    assert all(torch.equal(p, v) for p, v in zip(params, values, strict=True))
    assert torch.equal(model(x), before)
    buf.add_(1.0)  # the model computes with the buffer
    assert all(torch.equal(p, v + 1) for p, v in zip(params, values, strict=True))
    assert flatten_(params)[0].data_ptr() == buf.data_ptr()  # idempotent: a second call finds the buffer
    assert trainable(params, "flat", elementwise=False) == params
    assert trainable(params, "tensors") == params


def test_layout_resolution_and_chunks():
    assert resolve("auto", "cpu") == "tensors" and resolve("auto", "cuda") == "flat"
    assert resolve("auto", "meta") == "tensors" and resolve("flat", "cpu") == "flat"
    with pytest.raises(ValueError, match="perturb.layout"):
        resolve("rows", "cpu")
    assert chunk_of("flat", None) == FLAT_CHUNK and chunk_of("tensors", None) == CHUNK and chunk_of("flat", 64) == 64


@pytest.mark.parametrize("method,curv", [("hiso", {"kind": "diagonal"}), ("decomfl", {}),
                                         ("hiso", {"kind": "block_diagonal", "block_size": 4})])
def test_flat_layout_replays_bit_exactly(cfg_factory, method, curv):
    cfg = cfg_factory(method=method, curvature=curv, **{**DIGITS, "federation": {
        **DIGITS["federation"], "rounds": 200, "verify_replay": True}})
    fed, _ = build_federation(cfg)
    assert fed.layout == "flat" and fed.fused
    elementwise = curv.get("kind", "identity") != "block_diagonal"
    assert len(fed.work) == (1 if elementwise else len(fed.task.params()))  # one buffer, or views into it
    diffs = [fed.run_round()["replay_max_abs_diff"] for _ in range(200)]
    assert max(diffs) == 0.0
    assert final_sync(fed) == 0.0
    assert float(fed.server.params[0].abs().max()) > 0
    # the task's model computes with the client's working buffer: the layout re-homed the real parameters
    assert fed.task.params()[0].data_ptr() == fed.work[0].data_ptr()


KINDS = [("hiso", {"kind": "diagonal"}), ("decomfl", {}), ("hiso", {"kind": "block_diagonal", "block_size": 4})]


@pytest.mark.parametrize("method,curv", KINDS)
def test_flat_layout_resumes_bit_exactly(cfg_factory, tmp_path, method, curv):
    cfg = cfg_factory(method=method, curvature=curv, **{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 30},
                                                       "run": {"checkpoint_every": 10, "eval_every": 5,
                                                               "progress": False}})
    full = run(cfg, tmp_path / "full").metrics
    assert run(cfg, tmp_path / "resumed", stop_after=17).status == "interrupted"
    resumed = run(cfg, tmp_path / "resumed").metrics
    pd.testing.assert_frame_equal(no_wall(full), no_wall(resumed), check_exact=True)
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["stream"] == fingerprint("flat", 256, "native", "cpu")
    assert info["stream"]["layout"] == "flat" and info["stream"]["chunk"] == 256


def test_folding_restores_changes_losses_by_rounding_only(cfg_factory):
    """The fused step (P + 1 writes) and the plain one (2P + 1) see the same losses up to float rounding."""
    cfg = cfg_factory(**{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 40}})
    fused, _ = build_federation(cfg)
    plain, _ = build_federation(cfg)
    plain.fused = False
    a = [fused.run_round()["train_loss"] for _ in range(40)]
    b = [plain.run_round()["train_loss"] for _ in range(40)]
    drift = max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))
    assert drift < 1e-5, drift
    assert a != b  # the fused path ran (measured: 31 of 40 losses differ, by at most 6e-7 relative)


@pytest.mark.parametrize("method,curv", KINDS)
def test_another_chunk_is_another_run(cfg_factory, tmp_path, method, curv):
    cfg = cfg_factory(method=method, curvature=curv, **{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 4}})
    run(cfg, tmp_path)
    other = cfg_factory(method=method, curvature=curv, **{**DIGITS, "perturb": {"layout": "flat", "chunk": 512},
                                                         "federation": {**DIGITS["federation"], "rounds": 4}})
    with pytest.raises(RuntimeError, match="different config"):
        run(other, tmp_path)
    tensors = cfg_factory(method=method, curvature=curv, **{**DIGITS, "perturb": {"layout": "tensors", "chunk": 256},
                             "federation": {**DIGITS["federation"], "rounds": 4}})
    with pytest.raises(RuntimeError, match="different config"):
        run(tensors, tmp_path)


@pytest.mark.parametrize("where", ["run.json", "checkpoint.pt"])
def test_a_recorded_fingerprint_that_differs_is_refused(cfg_factory, tmp_path, where):
    cfg = cfg_factory(**{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 12},
                         "run": {"checkpoint_every": 5, "eval_every": 5, "progress": False}})
    run(cfg, tmp_path, stop_after=7)
    if where == "run.json":
        info = json.loads((tmp_path / "run.json").read_text())
        info["stream"]["draw_sha256"] = "0" * 16  # as if the run had started on another GPU model
        (tmp_path / "run.json").write_text(json.dumps(info))
    else:
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        state["stream"] = {**state["stream"], "device": "cuda"}
        torch.save(state, tmp_path / "checkpoint.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RunDirError, match=rf"{where} records directions drawn under another stream"):
        run(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written or removed


def test_the_cli_refuses_another_stream_with_exit_2(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"name": "fp", **DIGITS, "federation": {**DIGITS["federation"], "rounds": 3},
                                    "run": {"progress": False, "eval_every": 3}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hiso", "run", "--config", str(conf), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    info = json.loads((out / "run.json").read_text())
    info["stream"]["chunk"] = 1024
    info["status"] = "running"
    (out / "run.json").write_text(json.dumps(info))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "another stream (chunk 1024 -> 256)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_mismatch_names_each_field():
    a = fingerprint("flat", 256, "native", "cpu")
    assert mismatch(None, a) is None and mismatch(a, dict(a)) is None
    assert mismatch({**a, "torch": "0.0"}, a) is None  # versions are recorded; the draw's hash decides
    assert mismatch({**a, "layout": "tensors"}, a) == "layout 'tensors' -> 'flat'"


def test_a_supernode_that_would_draw_other_directions_refuses_to_join(tmp_path, monkeypatch):
    """The Flower hello carries the server's stream fingerprint; a SuperNode whose own differs (another GPU model,
    torch or perturb setting) answers with a refusal and writes nothing, and the server stops with its reason."""
    pytest.importorskip("flwr")
    from types import SimpleNamespace

    from hiso.config import load_config
    from hiso.flower import app
    from hiso.layout import config_stream
    config = {**DIGITS, "federation": {**DIGITS["federation"], "rounds": 2}}
    own = config_stream(load_config(data=config))
    node = SimpleNamespace(dir=tmp_path / "node", ids=[0, 1])
    answer = app.answer_hello(node, {"config": json.dumps(config), "stream": json.dumps(own)})
    assert answer["clients"] == "[0, 1]"
    # the node's kernels go back with its answer (the tests pin the portable numerics, so its bits hold anywhere)
    assert json.loads(answer["numerics"]) == {"bit_identical_across_cpus": True, "blas_architecture": "Haswell",
                                              "cpu": cpu()["model"]}
    other = SimpleNamespace(dir=tmp_path / "other", ids=[2])
    answer = app.answer_hello(other, {"config": json.dumps(config),
                                      "stream": json.dumps({**own, "draw_sha256": "0" * 16})})
    assert "directions would differ" in answer["refused"] and "draw_sha256" in answer["refused"]
    assert not other.dir.exists()

    class Grid:  # one SuperNode on another GPU model: its own draw differs from the server's
        def send_and_receive(self, msgs, timeout):
            for m in msgs:
                hello = dict(m.content["hello"])
                hello["stream"] = json.dumps({**json.loads(hello["stream"]), "draw_sha256": "f" * 16})
                yield SimpleNamespace(has_content=lambda: True, content={"hello": app.answer_hello(other, hello)},
                                      metadata=SimpleNamespace(src_node_id=7))
    # a Message outside a Flower run has no run id: the grid above only reads its content
    monkeypatch.setattr(app, "Message", lambda content, **kw: SimpleNamespace(content=content))
    with pytest.raises(app.StreamMismatch, match="SuperNode 7: its directions would differ"):
        app._hello(Grid(), [7], config, timeout=1.0)
