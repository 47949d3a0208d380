"""bench/gpu_check.py runs end to end on CPU with a tiny OPT, so its first run on a GPU is not its first run."""
import math

from bench import gpu_check


def test_gpu_check_runs_on_cpu_tiny(capsys):
    report = gpu_check.main(["--device", "cpu", "--tiny", "--rounds", "100", "--batch", "4", "--seq", "16",
                             "--repeat", "1"])
    det = report["determinism"]
    assert det["same_seed_same_bits"] and det["replay_ok"] and det["model_moved"] and det["replay_rounds"] == 100
    tiny = report["models"]["tiny"]
    for key in ("decomfl_step_over_P1_forwards", "hiso_step_over_P1_forwards", "decomfl_replay_round_over_randn_d",
                "hiso_replay_round_over_randn_d"):
        assert math.isfinite(tiny[key]) and tiny[key] > 0, key
    assert tiny["hiso_peak_step_over_forward"] is None  # a GPU measurement
    assert '"determinism"' in capsys.readouterr().out
