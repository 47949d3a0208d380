"""A run folder cannot lie: one writer, final results stay final, extensions equal fresh runs, unreadable
state names its file, outputs follow the umask, and run.json keeps the provenance of every segment."""
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hiso.io import OutputError, atomic_write
from hiso.results import load_runs, reproducible, summarise
from hiso.run import RunFailed, run
from hiso.rundir import RunDir, RunDirError

ROOT = Path(__file__).resolve().parents[1]
QUAD = {"task": {"name": "quadratic", "dim": 50}, "federation": {"rounds": 25, "lr": 0.02}}
DIG = {"task": {"name": "digits", "alpha": 1.0},
       "federation": {"lr": 2e-3, "perturbations": 2, "batch_size": 16, "local_steps": 2}}


def no_wall(df):
    return reproducible(df)


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"name": "slow", "task": {"name": "digits"},
                                    "federation": {"rounds": 2000, "lr": 2e-3, "perturbations": 5},
                                    "run": {"checkpoint_every": 0, "eval_every": 1000, "progress": False}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hiso", "run", "--config", str(conf), "--out", str(out), "--replace-different"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "run.json").exists():
            time.sleep(0.05)
        before = files(out)
        second = subprocess.run(cmd + ["--set", "seed=7"], cwd=ROOT, capture_output=True, text=True)
        assert second.returncode == 2, second.stderr
        assert f"being written by another run (pid {first.pid})" in second.stderr
        assert files(out) == before  # --replace-different deleted nothing: it needs the lock first
    finally:
        first.kill()
        first.wait()
    RunDir(out).lock()  # the kernel released the killed writer's lock


def test_rerunning_a_diverged_run_changes_nothing(cfg_factory, tmp_path):
    cfg = cfg_factory(method="decomfl", task={"name": "quadratic", "dim": 50},
                      federation={"rounds": 60, "lr": 50.0, "max_abs_scalar": float("inf")})
    with pytest.raises(RunFailed, match="diverged"):
        run(cfg, tmp_path)
    before = files(tmp_path)
    for _ in range(2):
        with pytest.raises(RunFailed, match="diverged"):
            run(cfg, tmp_path)
        assert files(tmp_path) == before
    longer = cfg_factory(method="decomfl", task={"name": "quadratic", "dim": 50},
                         federation={"rounds": 90, "lr": 50.0, "max_abs_scalar": float("inf")})
    with pytest.raises(RunFailed, match="diverged"):  # a longer budget diverges at the same round
        run(longer, tmp_path)
    assert files(tmp_path)["metrics.csv"] == before["metrics.csv"]
    with pytest.raises(RunFailed, match="diverged"):
        run(longer, tmp_path / "fresh")
    pd.testing.assert_frame_equal(no_wall(pd.read_csv(tmp_path / "fresh" / "metrics.csv")),
                                  no_wall(pd.read_csv(tmp_path / "metrics.csv")), check_exact=True)


def test_extension_at_a_cadence_that_does_not_line_up_equals_the_fresh_run(cfg_factory, tmp_path):
    """25 rounds evaluated every 4 end with an evaluation at round 25 (the last round); extended to 40, round 25
    is not on the cadence, and the longer fresh run has no evaluation there."""
    def cfg(rounds):
        return cfg_factory(task=QUAD["task"], federation={**QUAD["federation"], "rounds": rounds},
                           run={"eval_every": 4, "checkpoint_every": 0, "progress": False})
    short = run(cfg(25), tmp_path / "ext").metrics
    assert pd.notna(short.iloc[-1]["rel_suboptimality"])
    extended = run(cfg(40), tmp_path / "ext").metrics
    fresh = run(cfg(40), tmp_path / "fresh").metrics
    pd.testing.assert_frame_equal(no_wall(extended), no_wall(fresh), check_exact=True)
    assert pd.isna(extended.loc[extended["round"] == 25, "rel_suboptimality"]).all()


def test_an_unreadable_checkpoint_falls_back_then_names_the_file(cfg_factory, tmp_path):
    cfg = cfg_factory(task=QUAD["task"], federation={**QUAD["federation"], "rounds": 30},
                      run={"eval_every": 5, "checkpoint_every": 10, "progress": False})
    ref = run(cfg, tmp_path / "ref").metrics
    out = tmp_path / "run"
    run(cfg, out, stop_after=25)  # checkpoints at 10 and 20
    assert (out / "checkpoint.prev.pt").exists()
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])  # truncated
    resumed = run(cfg, out).metrics  # resumes from round 10's checkpoint
    pd.testing.assert_frame_equal(no_wall(resumed), no_wall(ref), check_exact=True)
    run(cfg, out / "again", stop_after=15)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (out / "again" / name).exists():
            (out / "again" / name).write_bytes(b"garbage")
    with pytest.raises(RunDirError, match=r"checkpoint.pt .*--restart"):
        run(cfg, out / "again")
    assert run(cfg, out / "again", restart=True).status == "complete"


def test_an_unreadable_run_json_names_the_file_and_restart_recovers(cfg_factory, tmp_path):
    cfg = cfg_factory(task=QUAD["task"], federation={**QUAD["federation"], "rounds": 5})
    run(cfg, tmp_path)
    (tmp_path / "run.json").write_text('{"name": "run", "conf')
    with pytest.raises(RunDirError, match=r"run.json is unreadable .*--restart"):
        run(cfg, tmp_path)
    assert run(cfg, tmp_path, restart=True).status == "complete"


def test_outputs_follow_the_umask_and_failed_writes_leave_no_temp_files(tmp_path, monkeypatch):
    old = os.umask(0o002)
    try:
        atomic_write(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
    finally:
        os.umask(old)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=f"cannot write b.txt in {tmp_path}: No space left on device"):
        atomic_write(tmp_path / "b.txt", "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_run_json_keeps_a_segment_per_process_and_warns_when_code_changed(cfg_factory, tmp_path, caplog):
    cfg = cfg_factory(task=QUAD["task"], federation={**QUAD["federation"], "rounds": 20},
                      run={"eval_every": 5, "checkpoint_every": 5, "progress": False})
    out = tmp_path / "hiso" / "seed0"
    run(cfg, out, stop_after=12)
    info = json.loads((out / "run.json").read_text())
    assert [s["from_round"] for s in info["segments"]] == [0]
    info["segments"][0]["git_sha"] = "0" * 40  # as if the first segment ran under other code
    (out / "run.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="hiso.run"):
        run(cfg, out)
    assert "resuming at round 10 under other code" in caplog.text
    segs = json.loads((out / "run.json").read_text())["segments"]
    assert [s["from_round"] for s in segs] == [0, 10] and segs[0]["git_sha"] == "0" * 40
    run(cfg, tmp_path / "hiso" / "seed1")  # one process, one segment
    table = summarise(load_runs(tmp_path), "rel_suboptimality", 0.5)
    assert table.set_index("method").loc["hiso", "seeds resumed under other code"] == 1
    # reopening a finished run under other code computes nothing: no segment, no warning, not mixed
    done = tmp_path / "hiso" / "seed1" / "run.json"
    info = json.loads(done.read_text())
    info["segments"][0]["git_sha"] = "0" * 40
    done.write_text(json.dumps(info))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hiso.run"):
        run(cfg, done.parent)
    assert "under other code" not in caplog.text
    info = json.loads(done.read_text())
    assert [s["git_sha"] for s in info["segments"]] == ["0" * 40]
    # run.json from a runner that recorded such an empty segment (at the final round) is read the same way
    info["segments"].append({**info["segments"][0], "git_sha": "1" * 40, "from_round": info["rounds_done"]})
    done.write_text(json.dumps(info))
    table = summarise(load_runs(tmp_path), "rel_suboptimality", 0.5)
    assert table.set_index("method").loc["hiso", "seeds resumed under other code"] == 1


def test_an_unwritable_out_is_refused_before_compute(tmp_path, cfg_factory):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="cannot write there"):
        run(cfg_factory(**QUAD), blocker / "run")


def test_a_folder_without_room_for_two_checkpoints_is_refused_before_the_first_round(cfg_factory, tmp_path,
                                                                                     monkeypatch):
    import shutil as sh

    import hiso.resume
    monkeypatch.setattr(hiso.resume.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(RunDirError, match=r"100 B free, but this run's checkpoints need about [\d.]+ [KM]?B"):
        run(cfg_factory(**QUAD), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before writing anything: no folder, no .lock


@pytest.mark.parametrize("method,kept", [("hiso", 2), ("fedadam", 3)])
def test_the_free_space_check_counts_the_real_state(cfg_factory, tmp_path, monkeypatch, method, kept):
    """HiSo's checkpoint holds the model and H, FedAdam's the model and two moments: room for two copies of the
    model alone is refused, room for two copies of the real state is enough."""
    import shutil as sh

    import hiso.resume
    cfg = cfg_factory(method=method, task={"name": "quadratic", "dim": 5000},
                      federation={"rounds": 2, "lr": 1e-3, "weight_decay": 0.0})
    model = 4 * 5000
    for free, ok in ((2 * model + 100, False), (2 * kept * model + 4096, True)):
        monkeypatch.setattr(hiso.resume.shutil, "disk_usage", lambda p, f=free: sh._ntuple_diskusage(10**9, 10**9 - f, f))
        out = tmp_path / f"{free}"
        if ok:
            assert run(cfg, out).status == "complete"
        else:
            with pytest.raises(RunDirError, match="need about"):
                run(cfg, out)


def test_no_final_checkpoint_is_written_when_none_is_kept(cfg_factory, tmp_path, monkeypatch):
    from hiso.rundir import RunDir
    saved = []
    real = RunDir.save_checkpoint
    monkeypatch.setattr(RunDir, "save_checkpoint", lambda self, obj: (saved.append(len(obj["rows"])), real(self, obj)))
    base = {"task": QUAD["task"], "federation": {**QUAD.get("federation", {}), "rounds": 10}}
    run(cfg_factory(**base, run={"checkpoint_every": 4, "keep_checkpoint": False, "progress": False}), tmp_path / "a")
    assert saved == [4, 8] and not (tmp_path / "a" / "checkpoint.pt").exists()
    saved.clear()
    run(cfg_factory(**base, run={"checkpoint_every": 4, "progress": False}), tmp_path / "b")
    assert saved == [4, 8, 10] and (tmp_path / "b" / "checkpoint.pt").exists()


def test_a_checkpoint_written_on_another_device_is_read_onto_the_cpu(cfg_factory, tmp_path, monkeypatch):
    """Checkpoints are read with map_location="cpu" and each tensor goes to the run's device: a GPU run's checkpoint
    resumes on a CPU node.  Here torch.load refuses, as it does for a CUDA checkpoint on a node without CUDA, unless
    the runner maps the storages to the CPU."""
    import pandas as pd
    import torch

    cfg = cfg_factory(task=DIG["task"], federation={**DIG["federation"], "rounds": 12},
                      run={"checkpoint_every": 5, "eval_every": 4, "progress": False})
    full = run(cfg, tmp_path / "full").metrics
    run(cfg, tmp_path / "resumed", stop_after=7)
    real = torch.load

    def cuda_checkpoint(f, *a, map_location=None, **k):
        if map_location != "cpu":
            raise RuntimeError("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() "
                               "is False")
        return real(f, *a, map_location=map_location, **k)
    monkeypatch.setattr(torch, "load", cuda_checkpoint)
    resumed = run(cfg, tmp_path / "resumed").metrics
    pd.testing.assert_frame_equal(reproducible(full), reproducible(resumed),
                                  check_exact=True)


def test_a_run_stops_at_its_target_and_stays_stopped(cfg_factory, tmp_path):
    """run.stop_target ends the run at the first evaluation that reaches it; rerunning, extending the budget or
    resuming an interrupted copy all end at that same round."""
    def cfg(rounds):
        return cfg_factory(task={"name": "quadratic", "dim": 100, "effective_rank": 5},
                           federation={"rounds": rounds, "lr": 0.02},
                           run={"eval_every": 5, "checkpoint_every": 10, "progress": False, "stop_target": 0.5})
    res = run(cfg(400), tmp_path / "a")
    last = res.metrics.iloc[-1]
    assert last["round"] < 400 and last["rel_suboptimality"] <= 0.5
    assert (res.metrics["rel_suboptimality"].dropna().iloc[:-1] > 0.5).all()  # the first evaluation that reached it
    assert "reached run.stop_target" in json.loads((tmp_path / "a" / "run.json").read_text())["stopped"]
    before = files(tmp_path / "a")
    assert run(cfg(400), tmp_path / "a").status == "complete" and files(tmp_path / "a") == before
    assert files(tmp_path / "a")["metrics.csv"] == (run(cfg(800), tmp_path / "a") and before["metrics.csv"])
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == before["metrics.csv"]
    run(cfg(400), tmp_path / "b", stop_after=int(last["round"]) - 3)
    pd.testing.assert_frame_equal(no_wall(run(cfg(400), tmp_path / "b").metrics), no_wall(res.metrics),
                                  check_exact=True)


def test_patience_ends_a_run_that_stopped_improving(cfg_factory, tmp_path):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 50}, federation={"rounds": 500, "lr": 1e-12},
                      run={"eval_every": 5, "progress": False, "stop_patience": 3})
    res = run(cfg, tmp_path)
    assert res.metrics.iloc[-1]["round"] < 500
    assert "no new best" in json.loads((tmp_path / "run.json").read_text())["stopped"]


def test_an_ended_run_keeps_only_its_final_checkpoint_or_none(cfg_factory, tmp_path):
    """The previous checkpoint goes once a run has ended; with run.keep_checkpoint false the final one goes too,
    and the run stays the same run: rerunning returns its metrics, and a longer budget recomputes it exactly."""
    def cfg(rounds, keep):
        return cfg_factory(task=QUAD["task"], federation={**QUAD["federation"], "rounds": rounds},
                           run={"eval_every": 5, "checkpoint_every": 10, "progress": False, "keep_checkpoint": keep})
    kept = run(cfg(25, True), tmp_path / "kept").metrics
    assert (tmp_path / "kept" / "checkpoint.pt").exists()
    assert not (tmp_path / "kept" / "checkpoint.prev.pt").exists()
    assert cfg(25, True).hash() == cfg(25, False).hash()
    dropped = run(cfg(25, False), tmp_path / "dropped").metrics
    assert not list((tmp_path / "dropped").glob("checkpoint*"))
    pd.testing.assert_frame_equal(no_wall(dropped), no_wall(kept), check_exact=True)
    before = files(tmp_path / "dropped")
    again = run(cfg(25, True), tmp_path / "dropped").metrics  # the same run: final, nothing recomputed
    assert files(tmp_path / "dropped") == before
    pd.testing.assert_frame_equal(again, dropped, check_exact=True)
    longer = run(cfg(40, False), tmp_path / "dropped").metrics  # no checkpoint to continue from: from round 0
    fresh = run(cfg(40, True), tmp_path / "fresh").metrics
    pd.testing.assert_frame_equal(no_wall(longer), no_wall(fresh), check_exact=True)


SIGTERM_MID_WRITE = """
import os, signal, sys, time
import torch
from hiso.__main__ import exit_on_signals
from hiso.io import atomic_torch_save
exit_on_signals()
real = torch.save
def slow_save(obj, f):
    real(obj, f)  # the temp file exists, full size, not yet renamed
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(30)
torch.save = slow_save
atomic_torch_save({"x": torch.zeros(10**6)}, sys.argv[1] + "/checkpoint.pt")
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_during_a_checkpoint_write_leaves_no_temp_file(tmp_path, sig):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", SIGTERM_MID_WRITE, str(tmp_path), sig], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [], proc.stderr  # neither the temp file nor a checkpoint


def test_the_next_run_removes_a_killed_writes_temp_files(cfg_factory, tmp_path):
    out = tmp_path / "run"
    run(cfg_factory(**QUAD), out)
    for name in (".checkpoint.pt.k3j2h1", ".run.json.x8y7z6", ".metrics.csv.a1b2c3"):
        (out / name).write_bytes(b"left by a kill -9")
    keep = out / "notes.txt"
    keep.write_text("a user's file")
    run(cfg_factory(**QUAD), out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock") == []
    assert keep.exists()


def test_a_wall_clock_cadence_checkpoints_long_rounds_and_changes_no_result(cfg_factory, tmp_path, monkeypatch):
    from hiso.rundir import RunDir
    saved = []
    real = RunDir.save_checkpoint
    monkeypatch.setattr(RunDir, "save_checkpoint", lambda self, obj: (saved.append(len(obj["rows"])), real(self, obj)))
    base = {"task": QUAD["task"], "federation": {**QUAD["federation"], "rounds": 5}}
    timed = cfg_factory(**base, run={"checkpoint_every": 0, "checkpoint_minutes": 1e-9, "progress": False})
    a = run(timed, tmp_path / "a").metrics
    assert saved == [1, 2, 3, 4, 5]  # every round took longer than the cadence (and the final one)
    plain = cfg_factory(**base, run={"checkpoint_every": 0, "progress": False})
    assert timed.hash() == plain.hash() and run(plain, tmp_path / "a").status == "complete"  # not part of its identity
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["precision"]["float32_matmul"] == "highest" and info["precision"]["cuda_matmul_allow_tf32"] is False
    assert len(a) == 5
