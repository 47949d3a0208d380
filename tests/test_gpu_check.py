"""bench/gpu_check.py runs end to end on CPU with a tiny OPT, so its first run on a GPU is not its first run."""
import math

from bench import gpu_check
from hiso.layout import COMPARED


def test_gpu_check_runs_on_cpu_tiny(capsys):
    report = gpu_check.main(["--device", "cpu", "--tiny", "--rounds", "100", "--batch", "4", "--seq", "16",
                             "--repeat", "1"])
    det = report["determinism"]
    assert det["same_seed_same_bits"] and det["replay_ok"] and det["model_moved"] and det["replay_rounds"] == 100
    assert det["layout"] == "tensors"  # the CPU default (CUDA's is flat)
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
            assert tiny[f"{key}_memory_above_forward_bytes"] is None  # a GPU measurement
    for name in ("decomfl", "hiso"):  # one buffer instead of ~30 tensors: fewer ops per step
        assert tiny[f"{name}_flat_step_aten_ops"] < tiny[f"{name}_tensors_step_aten_ops"] / 2
    assert tiny["tensors_stream"]["draw_sha256"] != tiny["flat_stream"]["draw_sha256"]  # another chunk, another draw
    port = report["portable"]  # on CPU the "device" is the CPU: the check's code path, trivially equal
    assert port["portable_draw_same_bits_as_cpu"]
    for name in ("decomfl", "hiso"):
        assert port[f"{name}_portable_cpu_replay_same_bits"] and port[f"{name}_portable_model_moved"]
        assert port[f"{name}_portable_cpu_replay_max_abs_diff"] == 0.0
    assert '"determinism"' in capsys.readouterr().out
