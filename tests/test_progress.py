"""`python -m hiso progress RESULTS` (hiso/progress.py): where a long tier's runs stand, read from real run folders
(a finished run, one stopped midway, one diverged) without touching them."""
import subprocess
import sys

import pandas as pd
import pytest

from hiso.progress import report, rows
from hiso.run import RunFailed, run

QUAD = {"name": "quadratic", "dim": 50}


def test_progress_reads_finished_stopped_and_diverged_runs_and_changes_nothing(cfg_factory, tmp_path):
    runs = tmp_path / "runs" / "e"
    run(cfg_factory(method="decomfl", task=QUAD, federation={"rounds": 30, "lr": 0.02},
                    run={"eval_every": 10, "checkpoint_every": 10}), runs / "decomfl" / "seed0")
    run(cfg_factory(method="hiso", task=QUAD, federation={"rounds": 30, "lr": 0.02},
                    run={"eval_every": 10, "checkpoint_every": 10}), runs / "hiso" / "seed0", stop_after=20)
    with pytest.raises(RunFailed, match="diverged"):
        run(cfg_factory(method="decomfl", task=QUAD, federation={"rounds": 60, "lr": 50.0, "max_abs_scalar": float("inf")}),
            runs / "decomfl@50" / "seed0")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    got = {r["run"]: r for r in rows(tmp_path, "rel_suboptimality")}
    assert set(got) == {"e/decomfl/seed0", "e/hiso/seed0", "e/decomfl@50/seed0"}
    done, stopped, lost = got["e/decomfl/seed0"], got["e/hiso/seed0"], got["e/decomfl@50/seed0"]
    metrics = pd.read_csv(runs / "decomfl" / "seed0" / "metrics.csv").dropna(subset=["rel_suboptimality"])
    assert done["state"] == "complete" and (done["rounds"], done["budget"]) == (30, 30)
    assert done["last"] == metrics["rel_suboptimality"].iloc[-1]
    assert done["best"] == metrics["rel_suboptimality"].min()  # lower is better for this metric
    assert done["best_round"] == int(metrics.loc[metrics["rel_suboptimality"].idxmin(), "round"])
    assert done["cpu_min"] > 0
    assert stopped["state"] == "in progress" and (stopped["rounds"], stopped["budget"]) == (20, 30)
    assert lost["state"] == "diverged"
    text = report(tmp_path, "rel_suboptimality", only="e/decomfl*")
    assert "e/hiso/seed0" not in text and "3 runs" not in text and "2 runs: 1 complete, 1 diverged" in text
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or removed
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path), "--metric", "rel_suboptimality"],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "3 runs: " in cli.stdout and "1 in progress" in cli.stdout, cli.stderr
    from hiso.progress import higher_is_better
    assert not higher_is_better("dev_loss") and higher_is_better("dev_accuracy") and not higher_is_better("train_loss")
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path), "--metric", "speed"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "--metric 'speed': not a metric" in cli.stderr, cli.stderr
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "nowhere: no runs/ or study/ folder" in cli.stderr and not (tmp_path / "nowhere").exists()


def test_progress_sums_a_study_tier_s_jobs(tmp_path):
    """The curvature study's jobs (<results>/study): finished scans, a scan in progress with its measured points,
    finished evaluations, and the wall hours their rows record."""
    from hiso.progress import report
    tune, ev = tmp_path / "study" / "tuning" / "p", tmp_path / "study" / "eval" / "p" / "identity"
    tune.mkdir(parents=True)
    ev.mkdir(parents=True)
    pd.DataFrame({"lr": [0.1, 0.05], "seconds": [1800.0, 1800.0]}).to_csv(tune / "identity.csv", index=False)
    (tune / "identity.json").write_text('{"lr": 0.1}')
    (tune / "diagonal.csv.partial.jsonl").write_text('{"job": 1}\n{"lr": 0.1}\n{"lr": 0.05}\n')
    pd.DataFrame({"seed": [0], "seconds": [3600.0]}).to_csv(ev / "tuned-seed0.csv", index=False)
    text = report(tmp_path, "test_loss")
    assert "p/diagonal: tuning scan in progress, 2 point(s) measured" in text
    assert "study: 1 tuning scans finished, 1 in progress; 1 evaluations finished; 2.00 hours" in text
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path)], capture_output=True, text=True)
    assert cli.returncode == 0 and "study: 1 tuning scans finished" in cli.stdout, cli.stderr

