"""Portable CPU numerics (hiso/numerics.py): pinned before torch in every entry point, recorded in run.json, and a
resume under other numerics refused before anything is touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_config

from hiso import numerics
from hiso.run import run

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _env(**extra):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def _quadratic(rounds=30):
    return make_config(task={"name": "quadratic", "dim": 50}, method="hiso",
                       federation={"rounds": rounds, "lr": 0.01}, run={"eval_every": 10, "checkpoint_every": 10})


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_the_tests_and_the_cli_run_pinned(tmp_path):
    """conftest imports hiso before torch, as `python -m hiso` does: ATen's AVX2 kernels, MKL's COMPATIBLE
    branch, no oneDNN convolutions; run.json says so, with the CPU that ran it."""
    run(_quadratic(), tmp_path / "r")
    rec = json.loads((tmp_path / "r" / "run.json").read_text())["numerics"]
    assert rec["mode"] == "portable" and rec["bit_identical_across_cpus"] is True
    assert rec["settings"] == numerics.PORTABLE_ENV and rec["aten_capability"] == "AVX2"
    assert rec["mkldnn_enabled"] is False and rec["pinned_before_torch"] is True
    assert rec["cpu"]["model"] and "avx2" in rec["cpu"]["flags"]
    # a fresh interpreter that imports torch first cannot pin the kernels, and its record says so
    code = ("import os; os.environ.pop('ATEN_CPU_CAPABILITY', None); import torch, hiso; from hiso import numerics;"
            "numerics.apply_torch(1); import json; print(json.dumps(numerics.state()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_env(HISO_NUMERICS="portable", ATEN_CPU_CAPABILITY="")).stdout
    late = json.loads(out)
    assert late["pinned_before_torch"] is False and late["bit_identical_across_cpus"] is False


def test_native_mode_is_recorded_and_not_claimed_portable(tmp_path):
    cfg = tmp_path / "q.yaml"
    cfg.write_text("method: decomfl\ntask: {name: quadratic, dim: 20}\nfederation: {rounds: 3, lr: 0.01}\n"
                   "run: {progress: false}\n")
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(cfg), "--out", str(tmp_path / "n")],
                       cwd=tmp_path, capture_output=True, text=True, env=_env(HISO_NUMERICS="native"))
    assert p.returncode == 0, p.stderr
    rec = json.loads((tmp_path / "n" / "run.json").read_text())["numerics"]
    assert rec["mode"] == "native" and rec["bit_identical_across_cpus"] is False and rec["mkldnn_enabled"]


def test_a_resume_under_other_numerics_is_refused_and_touches_nothing(tmp_path):
    out = tmp_path / "r"
    cfg = tmp_path / "q.yaml"
    cfg.write_text("method: hiso\ntask: {name: quadratic, dim: 50}\nfederation: {rounds: 30, lr: 0.01}\n"
                   "run: {progress: false, eval_every: 10, checkpoint_every: 10}\n")
    from hiso.config import load_config
    assert run(load_config(cfg), out, stop_after=20).status == "interrupted"  # portable, in this process
    before = _files(out)
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(cfg), "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, env=_env(HISO_NUMERICS="native"))
    assert p.returncode == 2, p.stderr
    assert "other CPU numerics" in p.stderr and "mode 'portable' -> 'native'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert _files(out) == before
    # under the numerics it started with, it resumes and ends
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(cfg), "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, env=_env(HISO_NUMERICS="portable"))
    assert p.returncode == 0, p.stderr


def test_an_unknown_mode_is_refused(tmp_path):
    cfg = tmp_path / "q.yaml"
    cfg.write_text("method: decomfl\ntask: {name: quadratic, dim: 20}\nfederation: {rounds: 3, lr: 0.01}\n")
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(cfg), "--out", str(tmp_path / "x")],
                       cwd=tmp_path, capture_output=True, text=True, env=_env(HISO_NUMERICS="fast"))
    assert p.returncode == 2 and "HISO_NUMERICS='fast' is not a numerics mode" in p.stderr
    assert not (tmp_path / "x").exists()


def test_config_without_configfile_keeps_the_default_tier(tmp_path):
    """`snakemake --config 'only=[digits]'` (no --configfile) plans the default tier's digits experiment."""
    p = subprocess.run([SNAKEMAKE, "-n", "--config", "only=[digits]", f"results={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{tmp_path}/runs/digits/fedavg/seed0/metrics.csv" in p.stdout
    assert "runs/quadratic/" not in p.stdout


@pytest.mark.slow
def test_the_default_tier_rerun_here_reproduces_the_committed_tables(tmp_path):
    """`make run`'s tier without its LM experiment (an hour of CPU; its kernels are a golden run), from nothing:
    the step-size scans, every method's seeds and rounding twins, the tables and the page.  On whatever x86-64 CPU
    the tests run, it gives the committed docs/results/default/tables (digits, quadratic, both effective ranks)
    cell for cell, measured times aside: the page is the same bits on any CPU, and a code change that moves one
    of its numbers fails here until the page is re-rendered."""
    out = tmp_path / "check"
    p = subprocess.run([SNAKEMAKE, "--cores", "2", "--config", "only=[digits,quadratic,effrank-*]",
                        f"results={out}", "-q"], cwd=ROOT,
                       capture_output=True, text=True, env=_env())
    assert p.returncode == 0, p.stderr[-3000:]
    c = subprocess.run([sys.executable, "workflows/scripts/compare_tables.py", "docs/results/default/tables",
                        str(out / "pages" / "default" / "tables")], cwd=ROOT, capture_output=True, text=True)
    assert c.returncode == 0 and "4 table(s) compared: every cell matches" in c.stdout, c.stdout[-3000:]


def test_compare_tables_finds_a_changed_cell_and_ignores_measured_times(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    head = "method,final accuracy mean,seconds per round (mean),run hours,tuning hours\n"
    (old / "t.csv").write_text(head + "hiso,0.5770000000000001,1.5,0.25,1.0\n")
    (new / "t.csv").write_text(head + "hiso,0.5770000000000001,9.5,0.75,3.0\n")  # another machine's times
    script = [sys.executable, str(ROOT / "workflows/scripts/compare_tables.py"), str(old), str(new)]
    p = subprocess.run(script, capture_output=True, text=True)
    assert p.returncode == 0 and "every cell matches" in p.stdout
    (new / "t.csv").write_text(head + "hiso,0.5770000000000002,1.5,0.25,1.0\n")
    p = subprocess.run(script, capture_output=True, text=True)
    assert p.returncode == 1
    assert "hiso / final accuracy mean: 0.5770000000000001 committed, 0.5770000000000002 now" in p.stdout
