"""bench/gpu_check.py runs end to end on CPU with a tiny OPT, through bench/device_check.sh as a GPU machine runs
it, so its first run on a GPU is not its first run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hiso.layout import COMPARED

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """bench/device_check.sh as a GPU machine runs it (python3, PYTHONPATH, no install), on CPU (DEVICE=cpu: a tiny
    OPT), with datasets, flwr, snakemake and gguf hidden (tests/device_image): its report."""
    out = tmp_path_factory.mktemp("device")
    # TIMEOUT: the script's own limit fits the GPU machine's budget; a test checks behaviour, not the speed of a
    # CPU that other jobs share (its default, 420 s, was overrun here under load)
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "PYTHON": sys.executable, "TIMEOUT": "3600",
           "PYTHONPATH": str(ROOT / "tests" / "device_image")}
    p = subprocess.run([str(ROOT / "bench" / "device_check.sh")], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads((out / "versions.json").read_text())["torch"]
    return json.loads((out / "gpu_check.json").read_text())


def test_gpu_check_runs_on_cpu_tiny(rehearsal):
    report = rehearsal
    for layout, chunk in (("tensors", 1 << 18), ("flat", 1 << 26)):  # CUDA's default is flat: both run in CI
        det = report["determinism"][layout]
        assert det["same_seed_same_bits"] and det["replay_ok"] and det["model_moved"] and det["replay_rounds"] == 100
        assert det["layout"] == layout and det["chunk"] == chunk
    assert report["backend"]["precision"]["float32_matmul"] == "highest"  # the paper tier's settings
    tiny = report["models"]["tiny"]
    for layout in ("tensors", "flat"):
        stream = tiny[f"{layout}_stream"]
        assert stream["layout"] == layout and all(stream.get(k) for k in COMPARED), stream
        for name in ("decomfl", "hiso"):
            key = f"{name}_{layout}"
            for field in ("step_over_P1_forwards", "replay_round_over_randn_d"):
                assert math.isfinite(tiny[f"{key}_{field}"]) and tiny[f"{key}_{field}"] > 0, (key, field)
            assert 0 < tiny[f"{key}_step_launches"] <= tiny[f"{key}_step_aten_ops"]
            assert tiny[f"{key}_step_syncs"] <= 5 + 2  # P + 2 (on CPU the reads are not device syncs: 0)
            assert tiny[f"{key}_memory_above_inference_bytes"] is None  # a peak is a GPU measurement
        # the method's state, counted apart from the model and batch: HiSo's H makes it larger than DeComFL's
        assert tiny[f"hiso_{layout}_state_bytes"] >= tiny[f"decomfl_{layout}_state_bytes"] + 4 * tiny["params"]
        assert tiny[f"decomfl_{layout}_state_bytes"] >= 4 * tiny["params"]  # the server's copy of the model
    for name in ("decomfl", "hiso"):  # one buffer instead of ~30 tensors: fewer ops per step
        assert tiny[f"{name}_flat_step_aten_ops"] < tiny[f"{name}_tensors_step_aten_ops"] / 2
    assert tiny["tensors_stream"]["draw_sha256"] != tiny["flat_stream"]["draw_sha256"]  # another chunk, another draw
    port = report["portable"]  # on CPU the "device" is the CPU: the check's code path, trivially equal
    assert port["portable_draw_same_bits_as_cpu"] and port["portable_over_native_draw"] > 0
    for name in ("decomfl", "hiso"):
        assert port[f"{name}_portable_cpu_replay_same_bits"] and port[f"{name}_portable_model_moved"]
        assert port[f"{name}_portable_cpu_replay_max_abs_diff"] == 0.0


def test_the_curvature_diagnostics_keep_their_draws_on_the_models_device():
    """A CUDA-shaped check on CPU: parameters on the `meta` device, where arithmetic with a CPU tensor raises as
    it does with a CUDA one.  Hutchinson's draws come from a CPU generator (the same bits on any device) and must
    be placed on the parameters' device before they meet the Hessian-vector products."""
    import torch

    from hiso.diagnostics import true_diagonal

    class OnDevice:  # a differentiable loss sum_i w_i p_i^2 over parameters that live on another device
        def __init__(self):
            self.p = [torch.ones(5, 3, device="meta"), torch.ones(4, device="meta")]
            self.w = [torch.ones(5, 3, device="meta"), torch.ones(4, device="meta")]

        def params(self):
            return self.p

        def grad_loss(self, batch):
            return sum((p * p * w).sum() for p, w in zip(self.p, self.w, strict=True))
    diag = true_diagonal(OnDevice(), samples=2, batch=0)
    assert diag.device.type == "meta" and diag.shape == (19,)
