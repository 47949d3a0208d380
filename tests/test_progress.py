"""`python -m hiso progress RESULTS` (hiso/progress.py): where a long tier's runs stand, read from real run folders
(a finished run, one stopped midway, one diverged) without touching them."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hiso.progress import report, rows
from hiso.run import RunFailed, run

ROOT = Path(__file__).resolve().parents[1]

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


def _fake_run(folder, status, rounds, budget, cpu_per_round):
    """A run folder as the runner leaves it (run.json, metrics.csv), with `cpu_per_round` seconds a round."""
    import json
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status, "rounds_done": rounds,
                                                 "config": {"federation": {"rounds": budget}}}))
    pd.DataFrame({"round": range(1, rounds + 1), "cpu_seconds": [cpu_per_round] * rounds}).to_csv(
        folder / ("metrics.csv" if status == "complete" else "metrics.partial.csv"), index=False)


def test_progress_lists_a_tiers_planned_runs_that_have_not_started_and_estimates_the_cpu_left(tmp_path):
    """--tier: the runs the tier plans without a folder are "not started" (reported runs, rounding twins, full-grid
    scan points; --methods slices as the workflow does), and the CPU time left is a run in progress at its own rate
    plus each run not started at the median of its experiment's complete runs of the same kind."""
    from hiso.progress import planned
    tier = tmp_path / "tier.yaml"
    tier.write_text("seeds: [0, 1]\nexperiments:\n  e:\n    base: b.yaml\n    metric: test_loss\n    target: 1.0\n"
                    "    methods: {decomfl: {}, hiso: {}}\n    scan_seeds: [100]\n"
                    "    scan: {decomfl: [0.01, 0.02], hiso: [0.01, 0.02]}\n    rounding: [0]\n")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("seeds: [0, 1, 2]\n")  # merged after the tier, as a second --configfile is
    assert planned([tier], ["decomfl"]) == {"e/decomfl/seed0", "e/decomfl/seed1", "e/decomfl+ulp/seed0",
                                            "e/decomfl@0.01/seed100", "e/decomfl@0.02/seed100"}
    assert "e/hiso/seed2" in planned([tier, overlay]) and len(planned([tier, overlay])) == 12
    runs = tmp_path / "results" / "runs" / "e"
    _fake_run(runs / "decomfl" / "seed0", "complete", 10, 10, 60.0)  # 10 CPU-minutes
    _fake_run(runs / "decomfl" / "seed1", "running", 5, 10, 60.0)  # 5 more
    _fake_run(runs / "decomfl@0.01" / "seed100", "complete", 10, 10, 24.0)  # 4 CPU-minutes
    text = report(tmp_path / "results", "test_loss", plan=planned([tier], ["decomfl"]))
    assert "e/decomfl+ulp/seed0" in text and "e/decomfl@0.02/seed100" in text and "e/hiso" not in text
    assert "5 runs: 2 complete, 1 in progress, 2 not started" in text
    # 5 (in progress) + 10 (the twin, at the reported runs' median) + 4 (a scan point, at the tuning runs')
    assert f"left: about {19 / 60:.1f} CPU-hours" in text
    text = report(tmp_path / "results", "test_loss", plan=planned([tier]))  # HiSo's go by DeComFL's runs of their kind
    assert f"left: about {(19 + 3 * 10 + 2 * 4) / 60:.1f} CPU-hours" in text
    text = report(tmp_path / "results", "test_loss", only="e/hiso@*", plan=planned([tier]))  # shown or not, they count
    assert "2 runs: 2 not started" in text and f"left: about {8 / 60:.1f} CPU-hours" in text
    (runs / "decomfl@0.01" / "seed100" / "run.json").unlink()  # no complete tuning run left to go by
    text = report(tmp_path / "results", "test_loss", only="e/hiso@*", plan=planned([tier]))
    assert "left: about 0.0 CPU-hours" in text and "; 2 runs with no complete run of their kind to go by" in text
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path / "results"), "--tier",
                          str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert cli.returncode == 2 and "missing.yaml" in cli.stderr, cli.stderr


def test_progress_estimates_a_study_tiers_jobs_left(tmp_path):
    """With the tier's plan, the study jobs not finished are counted per problem and timed: an evaluation at its
    problem and method's median (else its problem's), a scan's points left at its problem's median point; a
    problem with nothing finished is named as such.  The CLI plans them from the tier's files."""
    import json

    from hiso.progress import report, study_planned
    study = tmp_path / "study"
    for name, sec in (("identity/tuned-seed0", 100.0), ("identity/tuned-seed1", 300.0)):
        (study / "eval" / "p" / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"seed": [0], "seconds": [sec]}).to_csv(study / "eval" / "p" / f"{name}.csv", index=False)
    (study / "tuning" / "p").mkdir(parents=True)
    pd.DataFrame({"lr": [1, 2, 3, 4], "seconds": [10.0] * 4}).to_csv(study / "tuning" / "p" / "identity.csv", index=False)
    (study / "tuning" / "p" / "identity.json").write_text('{"lr": 2}')
    (study / "tuning" / "p" / "diagonal.csv.partial.jsonl").write_text(
        '{"problem": {}}\n' + json.dumps({"lr": 1, "cap": None, "row": {"lr": 1, "seconds": 10.0}}) + "\n")
    evals = ["p/identity/tuned-seed0", "p/identity/tuned-seed1", "p/identity/tuned-seed2", "p/diagonal/tuned-seed0",
             "q/identity/tuned-seed0"]
    labels = {"p": "P", "q": "Q", "identity": "identity (DeComFL)", "diagonal": "diagonal (HiSo)", "tuned": "tuned"}
    plan = {"evals": evals, "scans": ["p/identity", "p/diagonal", "q/identity"], "labels": labels}
    text = report(tmp_path, "test_loss", study_plan=plan)
    # p: two evaluations at 200 s (identity's median; diagonal has none, so p's), a scan of 4 - 1 points at 10 s
    assert "study left: 3 of 5 evaluations and 2 of 3 tuning scans, about 0.1 hours" in text
    assert "; 2 jobs with nothing to go by" in text
    assert f"  p: 2 evaluations and 1 scan left, about {(400 + 30) / 3600:.2f} h\n" in text
    assert "  q: 1 evaluation and 1 scan left, about 0.00 h (2 with nothing finished of their kind to go by)" in text
    # timed by a published page of the tier: its own seconds for the same jobs, times this run's speed against it
    like = tmp_path / "page"
    like.mkdir()
    pd.DataFrame([{"problem": "P ", "method": "identity (DeComFL)", "protocol": "tuned", "seed": s, "seconds": sec}
                  for s, sec in ((0, 50.0), (1, 150.0), (2, 1000.0))]
                 + [{"problem": "Q", "method": "identity (DeComFL)", "protocol": "tuned", "seed": s, "seconds": sec}
                    for s, sec in ((0, 60.0), (1, 30.0))]).to_csv(like / "eval.csv", index=False)
    (study / "eval" / "q" / "identity").mkdir(parents=True)  # q's kernels run 3x slower here than there
    pd.DataFrame({"seed": [1], "seconds": [90.0]}).to_csv(study / "eval" / "q" / "identity" / "tuned-seed1.csv",
                                                           index=False)
    pd.DataFrame([{"problem": "P", "method": "diagonal (HiSo)", "lr": lr, "seconds": 100.0} for lr in (1, 2)]
                 + [{"problem": "Q", "method": "identity (DeComFL)", "lr": 1, "seconds": 36.0}]).to_csv(
        like / "tuning.csv", index=False)
    text = report(tmp_path, "test_loss", study_plan=plan, like=like)
    # p's runs took 2x the page's time here (100/50, 300/150), q's 3x (90/30): p/identity seed 2 at 1000 s x 2;
    # p/diagonal seed 0 has no run of its problem and method there to go by; the p/diagonal scan at 200 s x 2 less
    # its 10 s point; q's evaluation at 60 s x 3 and its scan at 36 s x 3
    assert "per problem (overall 2.00, from 3;" in text
    assert f"  p: 2 evaluations and 1 scan left, about {(2000 + 390) / 3600:.2f} h (1 with nothing" in text
    assert text.endswith(f"  q: 1 evaluation and 1 scan left, about {(180 + 108) / 3600:.2f} h")
    tier = ["workflows/config/curvature.yaml", "workflows/config/overlays/curvature-twins.yaml"]
    planned = study_planned([ROOT / t for t in tier])
    planned_evals, planned_scans = planned["evals"], planned["scans"]
    assert len(planned_evals) == len(set(planned_evals)) and "digits/identity/rounding-seed0" in planned_evals
    assert "digits/identity" in planned_scans and "smollm2-lora-rt/diagonal" in planned_scans
    assert "digits/identity/tuned-seed9" in planned_evals and "lognormal-d10000/identity/tuned-seed9" not in planned_evals
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path), "--tier", *tier], cwd=ROOT,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert f"study left: {len(planned_evals)} of {len(planned_evals)} evaluations" in cli.stdout
    assert study_planned([ROOT / "workflows/config/default.yaml"]) is None
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path), "--tier", *tier, "--like",
                          str(ROOT / "docs" / "results" / "curvature")], cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 0 and "docs/results/curvature's own seconds" in cli.stdout, cli.stderr
    cli = subprocess.run([sys.executable, "-m", "hiso", "progress", str(tmp_path), "--tier", *tier, "--like",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 2 and "not a published study page" in cli.stderr
