"""The warm runner (hiso/warm.py): a run forked from the server is the same run as a cold `python -m hiso run`:
same metrics, same exit codes and messages, killed when its client is killed, and cold whenever the server
cannot vouch for its imports."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hiso.results import reproducible

ROOT = Path(__file__).resolve().parents[1]
BASE = ["run", "--config", str(ROOT / "workflows/config/base/quadratic.yaml"), "--set", "federation.rounds=60",
        "--set", "task.dim=200", "--set", "run.progress=false", "--set", "run.threads=1"]
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    sock = folder / "s.sock"
    env = {**os.environ, **THREADS}
    proc = subprocess.Popen([sys.executable, "-m", "hiso.warm", "serve", "--socket", str(sock), "--idle-exit", "600"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.1)
    yield {"sock": str(sock), "env": env, "proc": proc}
    proc.terminate()
    proc.wait(timeout=30)
    assert not sock.exists()  # the server removes its socket


def hiso(args, env, warm_sock=None, **kw):
    env = dict(env)
    env.pop("HISO_WARM_SOCKET", None)
    if warm_sock:
        env["HISO_WARM_SOCKET"] = warm_sock
    return subprocess.run([sys.executable, "-m", "hiso", *args], env=env, capture_output=True, text=True, cwd=ROOT,
                          **kw)


def without_time(folder: Path) -> pd.DataFrame:
    return reproducible(pd.read_csv(folder / "metrics.csv"))


def test_warm_run_equals_cold_run(server, tmp_path):
    cold = hiso([*BASE, "--out", str(tmp_path / "cold")], server["env"])
    warm = hiso([*BASE, "--out", str(tmp_path / "warm")], server["env"], server["sock"])
    assert cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
    assert "running cold" not in warm.stderr
    pd.testing.assert_frame_equal(without_time(tmp_path / "cold"), without_time(tmp_path / "warm"))
    assert json.loads((tmp_path / "warm/run.json").read_text())["runner"] == "warm"
    assert json.loads((tmp_path / "cold/run.json").read_text())["runner"] == "cold"
    # the same summary line, written to the client's stdout by the child
    assert warm.stdout.splitlines()[0].replace("/warm", "/cold") == cold.stdout.splitlines()[0]


def test_exit_codes_and_messages_pass_through(server, tmp_path):
    bad = [*BASE, "--set", "federation.lr=-1", "--out", str(tmp_path / "bad")]
    cold, warm = hiso(bad, server["env"]), hiso(bad, server["env"], server["sock"])
    assert cold.returncode == warm.returncode == 2
    assert warm.stderr == cold.stderr and "federation.lr" in warm.stderr
    assert not (tmp_path / "bad").exists()


def test_other_import_time_settings_run_cold(server, tmp_path):
    env = {**server["env"], "OMP_NUM_THREADS": "2"}
    r = hiso([*BASE, "--out", str(tmp_path / "r")], env, server["sock"])
    assert r.returncode == 0
    assert "running cold (import-time environment differs: ['OMP_NUM_THREADS'])" in r.stderr
    assert json.loads((tmp_path / "r/run.json").read_text())["runner"] == "cold"


def test_no_server_runs_cold(tmp_path):
    r = hiso([*BASE, "--out", str(tmp_path / "r")], {**os.environ, **THREADS}, str(tmp_path / "nothing.sock"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r/run.json").read_text())["runner"] == "cold"


def test_killing_the_client_kills_its_run(server, tmp_path):
    longer = [{"federation.rounds=60": "federation.rounds=10000000", "task.dim=200": "task.dim=2000"}.get(a, a)
              for a in BASE]  # one --set per key: a second would be refused
    args = [*longer, "--out", str(tmp_path / "long")]
    env = {**server["env"], "HISO_WARM_SOCKET": server["sock"]}
    client = subprocess.Popen([sys.executable, "-m", "hiso", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not _children(server["proc"].pid):  # the server has forked the run
        assert time.time() < deadline and client.poll() is None
        time.sleep(0.1)
    time.sleep(0.5)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM  # forwarded to the child, whose status it returns
    assert not _children(server["proc"].pid)
    # SIGKILL leaves no handler to forward: the server notices the closed connection and stops the child
    client = subprocess.Popen([sys.executable, "-m", "hiso", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    children = _children(server["proc"].pid)
    assert len(children) == 1
    client.kill()
    deadline = time.time() + 30
    while _children(server["proc"].pid):
        assert time.time() < deadline, "the orphaned run was not stopped"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


PROBED = """
import sys, torch
log = open(sys.argv[1], "a")
for name in ("is_available", "device_count", "get_device_name", "init", "_lazy_init", "current_device"):
    real = getattr(torch.cuda, name)
    def probe(*a, _name=name, _real=real, **k):
        log.write(_name + "\\n"); log.flush()
        return _real(*a, **k)
    setattr(torch.cuda, name, probe)
from hiso.warm import serve
raise SystemExit(serve(sys.argv[2], idle_exit=600))
"""


def test_neither_the_server_nor_a_cpu_job_probes_cuda_and_device_jobs_run_cold(tmp_path):
    """A CUDA probe before a fork leaves every forked child unable to use CUDA: the server never probes, a CPU job
    forked from it never does either, and a job that takes a GPU slot or a device runs cold."""
    probes, sock = tmp_path / "probes.txt", tmp_path / "s.sock"
    probes.touch()
    env = {**os.environ, **THREADS}
    proc = subprocess.Popen([sys.executable, "-c", PROBED, str(probes), str(sock)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.1)
        warm = hiso([*BASE, "--out", str(tmp_path / "cpu")], env, str(sock))
        assert warm.returncode == 0 and "running cold" not in warm.stderr, warm.stderr
        assert json.loads((tmp_path / "cpu/run.json").read_text())["runner"] == "warm"
        assert probes.read_text() == ""  # no CUDA probe in the server or in its forked CPU job
        gpu = hiso([*BASE, "--gpu-slot", "--out", str(tmp_path / "gpu")], {**env, "HISO_GPUS": "0"}, str(sock))
        assert "running cold (the job takes a GPU slot)" in gpu.stderr, gpu.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_task_on_a_device_runs_cold(tmp_path):
    from hiso.warm import _needs_device
    conf = tmp_path / "c.yaml"
    conf.write_text("task: {name: rotten_tomatoes, device: cuda}\n")
    assert "task.device is cuda" in _needs_device(["run", "--config", str(conf)], str(tmp_path))
    assert _needs_device(["run", "--config", str(conf), "--set", "task.device=cpu"], str(tmp_path)) is None
    assert "auto" in _needs_device(["run", "--config", "x.yaml", "--set", "task.device=auto"], str(tmp_path))
    assert _needs_device([*BASE], str(ROOT)) is None
