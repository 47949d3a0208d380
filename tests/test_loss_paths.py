"""No refusal loses a finished run (docs/robustness.md): a refused or abandoned lengthening, two tiers that share
`results:`, a second Snakemake whose job meets the run lock, a nearly full volume.  Each test shows the finished
run's metrics.csv byte-identical afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONFIG = ("method: hiso\ntask: {name: quadratic, dim: 50}\nfederation: {rounds: 30, lr: 0.01}\n"
          "run: {progress: false, eval_every: 10, checkpoint_every: 10}\n")


def _env(**extra):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def _hiso(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(tmp_path / "q.yaml"),
                           "--out", str(tmp_path / "R"), *args], cwd=tmp_path, capture_output=True, text=True,
                          env=_env())


@pytest.fixture
def finished(tmp_path):
    (tmp_path / "q.yaml").write_text(CONFIG)
    p = _hiso(tmp_path)
    assert p.returncode == 0, p.stderr
    return (tmp_path / "R" / "metrics.csv").read_bytes()


def test_a_refused_lengthening_deletes_nothing(tmp_path, finished):
    (tmp_path / "R" / "checkpoint.pt").write_bytes((tmp_path / "R" / "checkpoint.pt").read_bytes()[:100])
    p = _hiso(tmp_path, "--set", "federation.rounds=60")
    assert p.returncode == 2 and "no readable checkpoint" in p.stderr, p.stderr
    assert (tmp_path / "R" / "metrics.csv").read_bytes() == finished
    p = _hiso(tmp_path)  # the original command still succeeds
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "R" / "metrics.csv").read_bytes() == finished


def test_an_abandoned_lengthening_gives_the_shorter_run_back(tmp_path, finished):
    from hiso.config import load_config
    from hiso.run import run
    longer = load_config(tmp_path / "q.yaml", ["federation.rounds=60"])
    assert run(longer, tmp_path / "R", stop_after=45).status == "interrupted"  # as if killed at round 45
    assert not (tmp_path / "R" / "metrics.csv").exists()  # the longer run is in progress: no final metrics
    assert (tmp_path / "R" / "metrics.shorter.csv").read_bytes() == finished
    p = _hiso(tmp_path)  # the original command: the finished 30-round run is back
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "R" / "metrics.csv").read_bytes() == finished
    # lengthening again ends exactly where an uninterrupted 60-round run does
    p = _hiso(tmp_path, "--set", "federation.rounds=60")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "R" / "metrics.shorter.csv").exists()
    fresh = run(longer, tmp_path / "F")
    import pandas as pd

    from hiso.results import reproducible
    got = reproducible(pd.read_csv(tmp_path / "R" / "metrics.csv"))
    assert got.equals(reproducible(fresh.metrics))


def test_the_free_space_check_counts_the_checkpoints_already_there(tmp_path, monkeypatch, finished):
    import shutil

    from hiso import resume, runner
    from hiso.config import load_config
    from hiso.rundir import RunDirError
    real = shutil.disk_usage
    # 1 byte free: a fresh run cannot write its checkpoints, and the message prints real sizes
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda p: real(p)._replace(free=1))
    with pytest.raises(RunDirError, match=r"1 B free, but this run's checkpoints need about 800 B \(two of 400 B"):
        runner.run(load_config(tmp_path / "q.yaml"), tmp_path / "E")
    assert not (tmp_path / "E").exists()  # the refusal left no folder and no .lock
    # a lengthening that truly lacks the room is refused before anything is touched
    monkeypatch.setattr(resume, "state_nbytes", lambda _: 10**12)
    with pytest.raises(RunDirError, match=r"need about 2 TB \(two of 1 TB"):
        runner.run(load_config(tmp_path / "q.yaml", ["federation.rounds=60"]), tmp_path / "R")
    assert (tmp_path / "R" / "metrics.csv").read_bytes() == finished
    monkeypatch.undo()
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda p: real(p)._replace(free=1))
    # the finished run's lengthening needs no more room than the checkpoint it already has
    res = runner.run(load_config(tmp_path / "q.yaml", ["federation.rounds=60"]), tmp_path / "R")
    assert res.status == "complete" and len(res.metrics) == 60


TIER = """results: {results}
seeds: [0]
warm_runner: false
experiments:
  q:
    title: quadratic
    base: workflows/config/base/quadratic.yaml
    metric: rel_suboptimality
    target: 0.1
    sets: {{federation.rounds: {rounds}, task.dim: 200, run.eval_every: 100, run.checkpoint_every: 0}}
    methods:
      hiso: {{method: hiso, federation.lr: {lr}}}
"""


def _tier(tmp_path, name, lr, rounds=300):
    path = tmp_path / f"{name}.yaml"
    path.write_text(TIER.format(results=tmp_path / "res", lr=lr, rounds=rounds))
    return path


def _snakemake(tier, *extra, wait=True):
    target = str(Path(tier).parent / "res" / "runs" / "q" / "hiso" / "seed0" / "metrics.csv")
    cmd = [SNAKEMAKE, target, "--cores", "1", "--configfile", str(tier), *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_env())
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())


@pytest.mark.slow
def test_two_tiers_sharing_results_never_overwrite_each_other(tmp_path):
    a, b = _tier(tmp_path, "a", 0.01), _tier(tmp_path, "b", 0.03)
    p = _snakemake(a)
    assert p.returncode == 0, p.stdout + p.stderr
    metrics = tmp_path / "res" / "runs" / "q" / "hiso" / "seed0" / "metrics.csv"
    before = metrics.read_bytes()
    p = _snakemake(b)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "hold runs of another config" in out and "federation.lr: 0.01 there, 0.03 planned" in out, out[-2000:]
    assert "replace_different=True" in out
    assert metrics.read_bytes() == before
    p = _snakemake(b, "--config", "replace_different=True")  # told to: replaced
    assert p.returncode == 0, p.stdout + p.stderr
    assert metrics.read_bytes() != before


@pytest.mark.slow
def test_a_second_snakemake_waits_for_the_run_lock_and_removes_nothing(tmp_path):
    tier = _tier(tmp_path, "a", 0.01, rounds=4000)
    first = _snakemake(tier, wait=False)
    lock = tmp_path / "res" / "runs" / "q" / "hiso" / "seed0" / "run.json"
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:  # the first job is computing
        time.sleep(0.2)
    assert lock.exists(), first.communicate()[0]
    second = _snakemake(tier, "--nolock")  # as after `snakemake --unlock`: the same job, while the first runs
    out_first = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out_first
    assert second.returncode == 0, second.stdout + second.stderr
    metrics = tmp_path / "res" / "runs" / "q" / "hiso" / "seed0" / "metrics.csv"
    log = (tmp_path / "res" / "logs" / "q" / "hiso" / "seed0.log").read_text()
    assert metrics.exists() and "waiting for it" in log, log
    before = metrics.read_bytes()
    assert _snakemake(tier).returncode == 0 and metrics.read_bytes() == before


def _dry(tier_text, tmp_path):
    tier = tmp_path / "t.yaml"
    tier.write_text(tier_text)
    return subprocess.run([SNAKEMAKE, "-n", "--configfile", str(tier)], cwd=ROOT, capture_output=True, text=True,
                          env=_env())


def test_a_tier_with_yaml11_numbers_or_an_unusable_name_is_refused_at_plan_time(tmp_path):
    good = TIER.format(results=tmp_path / "res", lr=0.01, rounds=10)
    p = _dry(good.replace("seeds: [0]", "seeds: [010]"), tmp_path)
    assert p.returncode != 0 and "seeds[0]: '010' at line 2, column 9 is a YAML 1.1 number form" in p.stdout + p.stderr
    p = _dry(good.replace("  q:", "  my exp:"), tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "experiment 'my exp' must be one folder name" in out, out[-1500:]
    assert "MissingInputException" not in out
    assert not (tmp_path / "res").exists()


def test_an_option_the_method_ignores_warns_and_keeps_the_identity(caplog):
    from hiso.config import load_config
    base = {"method": "decomfl", "task": {"name": "quadratic", "dim": 20}}
    plain = load_config(data=base)
    with caplog.at_level("WARNING"):
        beta = load_config(data={**base, "curvature": {"beta": 0.5}})
    assert "curvature.beta: 0.5 is an option of kind" in caplog.text and "method decomfl (kind identity)" in caplog.text
    assert beta.hash() == plain.hash()
    assert load_config(data={**base, "method": "hiso", "curvature": {"beta": 0.5}}).hash() != \
        load_config(data={**base, "method": "hiso"}).hash()  # HiSo reads it


def test_size_checks_use_the_address_space_limit(tmp_path):
    import resource
    (tmp_path / "big.yaml").write_text("task: {name: quadratic, dim: 1000000}\nfederation: {num_clients: 1000}\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6_000_000 * 1024, resource.RLIM_INFINITY))
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", "big.yaml", "--out", "o"], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), preexec_fn=limit)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "more than the memory this process may use" in p.stderr and "Traceback" not in p.stderr
    from hiso.tasks import usable_memory
    if usable_memory()[0] > 6_000_000 * 1024:  # the limit is the tightest bound here: the message names it
        assert "bounded by the address-space limit (ulimit -v)" in p.stderr
    assert not (tmp_path / "o").exists()


def test_a_storm_of_sigterms_ends_the_run_quietly(tmp_path):
    import signal
    (tmp_path / "q.yaml").write_text(CONFIG.replace("rounds: 30", "rounds: 100000"))
    proc = subprocess.Popen([sys.executable, "-m", "hiso", "run", "--config", "q.yaml", "--out", "R"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 60
    while not (tmp_path / "R" / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(50):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Exception ignored" not in err and "Traceback" not in err, err
