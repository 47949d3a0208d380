"""hiso/gpu_slot.py: concurrent GPU jobs get distinct devices within whatever device list they are given."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hiso import gpu_slot

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from hiso.gpu_slot import claim; print(claim(), flush=True); time.sleep(60)"


def test_two_concurrent_jobs_under_cuda_visible_devices_get_distinct_devices(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "3,5",
           "HISO_GPU_LOCKS": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True)]
    try:
        first = procs[0].stdout.readline().strip()
        procs.append(subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True))
        second = procs[1].stdout.readline().strip()
        assert {first, second} == {"3", "5"}
        third = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "")], env=env,
                               capture_output=True, text=True, timeout=60)
        assert third.returncode != 0 and "all 2 GPUs of CUDA_VISIBLE_DEVICES (3,5) are held" in third.stderr
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_device_list_comes_from_hiso_gpus_then_cuda_visible_devices_then_the_machine(tmp_path, monkeypatch):
    for i in (0, 1, 7):
        (tmp_path / f"nvidia{i}").touch()
    (tmp_path / "nvidiactl").touch()
    monkeypatch.delenv("HISO_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_slot, "_nvml_count", lambda: None)  # no NVML here: count the device files
    # three device files are three devices, CUDA ordinals 0-2 (nvidia7 is a driver minor number, not an ordinal)
    assert gpu_slot.devices_to_share(tmp_path) == (["0", "1", "2"], f"{tmp_path}/nvidiaN (counted)")
    monkeypatch.setattr(gpu_slot, "_nvml_count", lambda: 2)
    assert gpu_slot.devices_to_share(tmp_path) == (["0", "1"], "NVML")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # set but empty: CUDA sees no device
    assert gpu_slot.devices_to_share(tmp_path) == ([], "CUDA_VISIBLE_DEVICES")
    assert gpu_slot.claim(lock_dir=tmp_path, dev_dir=tmp_path) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,4")
    assert gpu_slot.devices_to_share(tmp_path)[0] == ["2", "4"]
    monkeypatch.setenv("HISO_GPUS", "0,1")
    assert gpu_slot.devices_to_share(tmp_path) == (["0", "1"], "HISO_GPUS")


def test_a_single_device_is_taken_without_a_lock_and_none_means_nothing_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("HISO_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_slot.claim(lock_dir=tmp_path) == "0" and not list(tmp_path.iterdir())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpu_slot, "_nvml_count", lambda: None)
    assert gpu_slot.claim(lock_dir=tmp_path, dev_dir=tmp_path) is None


@pytest.fixture(autouse=True)
def _release():
    yield
    while gpu_slot._held:
        gpu_slot._held.pop().close()


def test_a_container_exposing_only_nvidia3_claims_ordinal_0(tmp_path, monkeypatch):
    (tmp_path / "nvidia3").touch()
    monkeypatch.delenv("HISO_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_slot, "_nvml_count", lambda: None)
    assert gpu_slot.claim(lock_dir=tmp_path, dev_dir=tmp_path) == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
