"""The curvature study tier (bench/curvature_study.py: its tuning and evaluation jobs; bench/curvature_report.py:
its tables and page): the protocol, resumption of a killed job, and the committed page rebuilt from its runs."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cr():
    """The curvature study's report (bench/curvature_report.py: summary tables, the page)."""
    from bench import curvature_report

    return curvature_report


@pytest.fixture
def cs():
    """The curvature study's jobs (bench/curvature_study.py; its unit-testable parts: tune, summarise)."""
    from bench import curvature_study

    return curvature_study


@pytest.mark.slow
def test_curvature_study_tier_quick_slice(tmp_path):
    """The study as a workflow tier: tuning jobs, evaluation jobs at the tuned step sizes, one report."""
    import yaml
    from test_workflow import SNAKEMAKE, job_counts, workflow_copy
    repo, out = workflow_copy(tmp_path), tmp_path / "results"
    tier_file = repo / "workflows" / "config" / "curvature.yaml"
    tier = yaml.safe_load(tier_file.read_text())
    tier["study"]["rounding"] = [0]  # every tuned run of seed 0 also runs as its rounding twin
    tier_file.write_text(yaml.safe_dump(tier))
    p = subprocess.run([SNAKEMAKE, "--cores", "2", "--configfile", "workflows/config/curvature.yaml", "--config",
                        f"results={out}", "only=[lognormal-d100]", "study_methods=[identity,diagonal]",
                        "study_quick=True"], cwd=repo, check=True, capture_output=True, text=True)
    assert job_counts(p.stdout + p.stderr) == {"study_tune": 2, "study_eval": 4, "study_report": 1, "all": 1, "total": 8}
    every = pd.read_csv(out / "pages" / "curvature" / "eval.csv")
    assert set(every.protocol) == {"tuned", "rounding twin"}
    ev = every[every.protocol == "tuned"]
    assert set(ev.method) == {"identity (DeComFL)", "diagonal (HiSo)"}
    twin = every[every.protocol == "rounding twin"].set_index("method")
    assert (twin.lr == ev.set_index("method").lr).all()  # a twin runs at its method's tuned step size
    page = (out / "pages" / "curvature.md").read_text()
    assert "## paired against DeComFL" in page
    hiso = ev[ev.method == "diagonal (HiSo)"].iloc[0]
    assert -1 <= hiso["H_spearman"] <= 1 and hiso["H_zeta"] > 0
    # each method is evaluated at the step size that won its tuning runs (on the held-out seed 100)
    tune = pd.read_csv(out / "pages" / "curvature" / "tuning.csv")
    for m, grp in ev.groupby("method"):
        t = tune[tune.method == m].assign(r=lambda d: d["rounds"].astype(float)).sort_values(["r", "final"])
        assert grp.lr.iloc[0] == t.lr.iloc[0]
    assert "only=[lognormal-d100]" in page and "| lognormal d=100 | diagonal (HiSo)" in " ".join(page.split())
    # carried to another machine (workflows/scripts/page_runs.py save / replay) with one evaluation still going:
    # the workflow there runs that evaluation and the report, nothing else, and the page's rows are the same
    saved, again = tmp_path / "saved", tmp_path / "again"
    page_runs = [sys.executable, "workflows/scripts/page_runs.py"]
    s = subprocess.run([*page_runs, "save", "--results", out, "--to", saved], cwd=repo, capture_output=True, text=True)
    assert s.returncode == 0 and "saved 6 finished runs and jobs" in s.stdout, s.stdout + s.stderr
    (saved / "study/eval/lognormal-d100/diagonal/rounding-seed0.csv").unlink()
    subprocess.run([*page_runs, "replay", "--page", saved, "--to", again], cwd=repo, check=True)
    p = subprocess.run([SNAKEMAKE, "--cores", "2", "--configfile", "workflows/config/curvature.yaml", "--config",
                        f"results={again}", "only=[lognormal-d100]", "study_methods=[identity,diagonal]",
                        "study_quick=True"], cwd=repo, check=True, capture_output=True, text=True)
    assert job_counts(p.stdout + p.stderr) == {"study_eval": 1, "study_report": 1, "all": 1, "total": 3}
    first, second = (pd.read_csv(o / "pages" / "curvature" / "eval.csv").drop(columns="seconds") for o in (out, again))
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.slow
def test_curvature_study_tier_rebuilds_the_committed_page_from_its_stored_runs(tmp_path):
    """split writes the committed page's runs as the jobs' outputs; the workflow then runs only the report, and
    the page and its CSVs are the committed ones (header aside: it names the commit and date it ran at)."""
    from test_workflow import SNAKEMAKE, job_counts, workflow_copy
    repo, out = workflow_copy(tmp_path), tmp_path / "results"
    page = (ROOT / "docs" / "results" / "curvature.md").read_text()
    sliced = re.search(r"--config 'only=\[([^]]*)\]'", page)  # a page of some problems names its slice
    only = sliced.group(1).split(",") if sliced else []
    subprocess.run([sys.executable, "-m", "bench.curvature_study", "split", "--to", str(out),
                    *(["--only", *only] if only else [])], cwd=repo, check=True, capture_output=True, text=True)
    p = subprocess.run([SNAKEMAKE, "--cores", "1", "--configfile", "workflows/config/curvature.yaml", "--config",
                        f"results={out}", *([f"only=[{','.join(only)}]"] if only else [])], cwd=repo, check=True,
                       capture_output=True, text=True)
    assert job_counts(p.stdout + p.stderr) == {"study_report": 1, "all": 1, "total": 2}
    new = (out / "pages" / "curvature.md").read_text()
    assert new.split("\n", 3)[3] == page.split("\n", 3)[3]
    for name in ("eval.csv", "tuning.csv"):
        assert (out / "pages" / "curvature" / name).read_bytes() == \
            (ROOT / "docs" / "results" / "curvature" / name).read_bytes(), name


def test_curvature_study_split_refuses_rows_that_are_not_the_protocols(cs, tmp_path):
    """A stored tuning scan missing a point the protocol tries, or an evaluation at another step size, is refused."""
    stored = ROOT / "docs" / "results" / "curvature"
    tuning = pd.read_csv(stored / "tuning.csv")
    drop = tuning[(tuning.problem == "lognormal d=100") & (tuning.method == "diagonal (HiSo)")].index[0]
    tuning.drop(index=drop).to_csv(tmp_path / "t.csv", index=False)
    p = subprocess.run([sys.executable, "-m", "bench.curvature_study", "split", "--to", str(tmp_path / "o"),
                        "--only", "lognormal-d100", "--tuning", str(tmp_path / "t.csv")], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "lack lr" in p.stderr
    ev = pd.read_csv(stored / "eval.csv")
    ev.loc[(ev.problem == "lognormal d=100") & (ev.method == "stein"), "lr"] *= 3
    ev.to_csv(tmp_path / "e.csv", index=False)
    p = subprocess.run([sys.executable, "-m", "bench.curvature_study", "split", "--to", str(tmp_path / "o2"),
                        "--only", "lognormal-d100", "--eval", str(tmp_path / "e.csv")], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "want one at lr" in p.stderr


def test_curvature_study_oracle_gain_uses_the_best_oracle_variant(cr):
    rows = [("identity (DeComFL)", 1000.0), ("diagonal (HiSo)", 600.0), ("oracle", float("inf")),
            ("oracle_central", 200.0), ("oracle_mu_rms", 300.0)]
    ev = pd.DataFrame([dict(problem="p", method=m, protocol="tuned", lr=0.1, seed=s, rounds=r,
                            forward_passes=r, bytes=r, final=0.1) for m, r in rows for s in (0, 1, 2)])
    table = cr.summarise(ev)
    line = next(ln for ln in table.splitlines() if "diagonal (HiSo)" in ln)
    # (1000 - 600) / (1000 - 200): measured against the fastest oracle, not the failing forward-difference one
    assert line.rstrip(" |").endswith("0.5")
    assert "oracle_gain_recovered" in table


def test_curvature_study_tuning_scan_stops_past_the_best_and_refines_around_it(cs, monkeypatch):
    # nothing reaches the target; 1.0 diverges (its last finite value is small but ranks nothing); the final
    # metric is best at 0.1 and worse below it, so the scan stops after 0.01 and 0.001
    finals = {1.0: (0.05, "diverged"), 0.1: (0.3, ""), 0.01: (0.5, ""), 0.001: (0.7, ""), 1e-4: (0.9, "")}
    ran = []

    def fake_run(spec, method, lr, seed, split, track=False, max_rounds=None):
        ran.append(lr)
        final, err = finals.get(lr, (0.2 if lr > 0.1 else 0.4, ""))
        return {"rounds": math.inf, "forward_passes": math.inf, "bytes": math.inf, "final": final,
                "seconds": 0.0, "error": err}

    monkeypatch.setattr(cs, "measure", fake_run)
    spec = {"rounds": 100, "metric": "rel_suboptimality", "label": "p"}
    lr = cs.tune(spec, {"label": "m"}, sorted(finals), 100, [])
    assert ran[:4] == [1.0, 0.1, 0.01, 0.001]  # 1e-4 never run
    assert sorted(ran[4:]) == sorted([math.sqrt(1.0 * 0.1), math.sqrt(0.1 * 0.01)])  # the best's neighbours
    assert lr == math.sqrt(0.1)  # the refined point above 0.1 ended best (0.2)


def test_curvature_study_pairs_rounds_with_both_spreads_and_censoring(cr):
    """Rounds against DeComFL's over the paired seeds (log scale), a claim only past the interval and both spreads;
    a pair where a run never reached the target makes the claim "censored"."""
    inf = float("inf")
    per_seed = {"identity (DeComFL)": [1000, 1200, 900, 1100, 1000], "fast": [500, 610, 440, 560, 505],
                "noisy": [300, 3000, 500, 2500, 700], "never": [inf, 600, inf, 500, 700]}
    twins = {"identity (DeComFL)": {0: 1000}, "fast": {0: 500}}
    ev = pd.DataFrame([dict(problem="p", method=m, protocol="tuned", lr=0.1, seed=s, rounds=float(r))
                       for m, rs in per_seed.items() for s, r in enumerate(rs)]
                      + [dict(problem="p", method=m, protocol="rounding twin", lr=0.1, seed=s, rounds=float(r))
                         for m, t in twins.items() for s, r in t.items()])
    t = cr.paired_rounds(ev).set_index("method")
    fast = t.loc["fast"]
    assert fast.pairs == 5 and fast.censored == 0 and 0.49 < fast.rounds_ratio < 0.52
    assert fast.ratio_ci_low < fast.rounds_ratio < fast.ratio_ci_high < 1 and fast.claim == "better"
    assert fast.rounding_spread_log10 == 0.0 and fast.rounding_pairs == 1  # the twins reproduced their rounds
    assert t.loc["noisy"].claim.startswith("not distinguishable")
    assert t.loc["never"].claim == "censored: of 5 seed pairs, 2 only the reference did"
    assert t.loc["never"].pairs == 3 and t.loc["identity (DeComFL)"].claim == "reference"
    # a twin that moved by more than the gap: the same difference is no longer a claim
    ev.loc[(ev.protocol == "rounding twin") & (ev.method == "fast"), "rounds"] = 1500.0
    claim = cr.paired_rounds(ev).set_index("method").loc["fast"].claim
    assert claim.startswith("not distinguishable: |difference|") and "rounding spread" in claim


def test_curvature_study_counts_one_sided_misses_at_the_budget_and_claims_only_the_conservative_way(cr):
    """With the round budget, pairs censored one way count the missing run at the budget (a lower bound on its
    rounds): a method faster than DeComFL although DeComFL's misses count at the budget is "better"; a method that
    misses is "worse" only as a bound allows; pairs where neither reached are left out; misses both ways decide
    nothing."""
    inf = float("inf")
    per_seed = {"identity (DeComFL)": [1000, 1200, inf, 1100, 1000, inf],
                "fast": [500, 610, 440, 560, 505, inf],   # reached where DeComFL did not (seed 2); neither: seed 5
                "slow": [3000, 3500, inf, inf, 3200, inf],  # missed where DeComFL reached (seed 3)
                "both": [500, inf, 440, 560, 505, 700],   # a miss each way
                "close": [990, 1210, 3900, 1090, 1010, inf]}  # reached at the budget's edge: the bound is loose
    ev = pd.DataFrame([dict(problem="p", method=m, protocol="tuned", lr=0.1, seed=s, rounds=float(r))
                       for m, rs in per_seed.items() for s, r in enumerate(rs)])
    t = cr.paired_rounds(ev, budgets={"p": 4000}).set_index("method")
    fast = t.loc["fast"]
    assert fast.pairs == 5 and fast.censored == 2 and fast.at_budget == 1 and fast.ratio_ci_high < 1
    assert fast.claim == ("better (rounding spread not measured) (a bound: 1 of DeComFL's runs that never reached "
                          "the target counted at the 4,000-round budget; 1 pair where neither reached the target "
                          "left out)")
    slow = t.loc["slow"]
    assert slow.at_budget == 1 and slow.ratio_ci_low > 1
    assert slow.claim.startswith("worse (rounding spread not measured) (a bound: 1 of this method's runs")
    assert t.loc["both"].claim == "censored: of 6 seed pairs, 2 only this method did, 1 only the reference did"
    assert t.loc["both"].at_budget == 0 and t.loc["both"].pairs == 3
    assert t.loc["close"].claim.startswith("censored: of 6 seed pairs, 1 neither reached the target, 1 only this "
                                           "method did: with 1 of DeComFL's runs")
    assert t.loc["close"].claim.endswith("the bound does not decide; 1 pair where neither reached the target left out")
    # without the budget, every censored pair keeps the claim "censored"
    assert cr.paired_rounds(ev).set_index("method").loc["fast"].claim.startswith("censored: of 6 seed pairs")


def test_curvature_study_rounding_twins_are_jobs_of_the_tier(cs):
    tier = {"seeds": [0, 1, 2], "study": {"reference": "a", "methods": {"a": {}, "b": {}}, "rounding": [0, 2],
                                          "problems": {"p": {"methods": ["a", "b"], "equal_lr": ["b"]}}}}
    twins = [(m, s) for _, m, proto, s in cs.jobs(tier) if proto == "rounding"]
    assert twins == [("a", 0), ("b", 0), ("a", 2), ("b", 2)]
    tier["study"]["rounding"] = True
    assert len([j for j in cs.jobs(tier) if j[2] == "rounding"]) == 6
    tier["study"]["problems"]["p"]["seeds"] = list(range(10))  # a cheap problem's own 10 seeds
    assert sorted({s for _, _, proto, s in cs.jobs(tier) if proto == "tuned"}) == list(range(10))
    tier["study"]["rounding"] = [0, 12]
    with pytest.raises(ValueError, match=r"study.rounding.*\[12\]"):
        list(cs.jobs(tier))


@pytest.mark.parametrize("key", ["oracles", "learned"])
def test_curvature_study_refuses_a_method_list_naming_an_undefined_method(cs, key):
    tier = {"seeds": [0], "study": {"reference": "a", "methods": {"a": {}, "b": {}}, key: ["b", "c"],
                                    "problems": {"p": {"methods": ["a", "b"]}}}}
    with pytest.raises(ValueError, match=rf"study.{key}: \['c'\] not in study.methods \(a, b\)"):
        cs.problems(tier)
    tier["study"][key] = ["b"]
    assert list(cs.problems(tier)) == ["p"]

def test_curvature_study_summary_refuses_runs_at_two_step_sizes(cr):
    ev = pd.DataFrame([dict(problem="p", method="m", protocol="tuned", lr=lr, seed=0, rounds=1.0,
                            forward_passes=1.0, bytes=1.0, final=0.1) for lr in (0.01, 0.03)])
    with pytest.raises(ValueError, match="more than one lr"):
        cr.summarise(ev)


def test_curvature_study_oracle_share_bound_and_tuning_instance_table(cr):
    inf = float("inf")
    t = pd.DataFrame(dict(problem="p", method=["identity (DeComFL)", "diagonal (HiSo)", "stein", "oracle_mu_rms"],
                          rounds=[inf, 600.0, inf, 200.0]))
    assert cr.oracle_share(t).isna().all()  # DeComFL never reached: no share without a budget
    bound = cr.oracle_share(t, {"p": 1000})  # DeComFL counted at the budget: (1000 - 600) / (1000 - 200)
    assert bound[1] == 0.5 and bound[3] == 1.0 and bound[[0, 2]].isna().all()  # never-reached methods: NaN
    t.loc[0, "rounds"] = 800.0
    assert cr.oracle_share(t, {"p": 1000}).isna().all()  # a bound only where DeComFL never reached it

    # the tuning-instance table reads each tuned method's row at its chosen lr, not its other grid points
    ev = pd.DataFrame([dict(problem="p", method=m, protocol="tuned", lr=lr, seed=s, rounds=r, forward_passes=r,
                            bytes=r, final=0.1) for m, lr, r in (("identity (DeComFL)", 0.1, 900.0),
                                                                 ("oracle", 0.01, 300.0)) for s in (0, 1, 2)])
    tuning = pd.DataFrame([dict(problem="p", method=m, lr=lr, rounds=r, final=0.1)
                           for m, lr, r in (("identity (DeComFL)", 0.1, 1000.0), ("identity (DeComFL)", 0.03, 50.0),
                                            ("oracle", 0.01, 400.0))])
    rows = cr.summary_tables(ev, tuning)["tuning instance"].set_index("method")
    assert rows.rounds.to_dict() == {"identity (DeComFL)": 1000.0, "oracle": 400.0}
    assert "## tuning instance" in cr.summarise(ev, tuning)


@pytest.mark.parametrize("best", [10 ** 0.5, 10 ** -2.5])
def test_curvature_study_tuning_extends_the_grid_past_an_edge_where_the_best_lies(cs, monkeypatch, best):
    # rounds to target grow with the distance (in decades) from `best`, which lies one half-decade outside the
    # grid [1e-2, 1]: the scan finds the edge best, steps past it (grid spacing) until an inner point wins
    ran = []

    def fake_run(spec, method, lr, seed, split, track=False, max_rounds=None):
        ran.append(lr)
        rounds = 100 * (1 + abs(math.log10(lr / best)))
        return {"rounds": rounds if max_rounds is None or rounds <= max_rounds else math.inf,
                "forward_passes": rounds, "bytes": rounds, "final": 0.05, "seconds": 0.0}

    monkeypatch.setattr(cs, "measure", fake_run)
    spec = {"rounds": 10_000, "metric": "rel_suboptimality", "label": "p"}
    grid = [10 ** e for e in (-2, -1.5, -1, -0.5, 0)]
    rows = []
    assert math.isclose(cs.tune(spec, {"label": "m"}, grid, 100, rows), best)
    outside = [lr for lr in ran if lr > 1.01 or lr < 0.0099]
    assert len(outside) == 2 and math.isclose(outside[0], best)  # best, then one step further (worse): stop
    assert sum(bool(r.get("extended")) for r in rows) == 2


def test_a_killed_curvature_tuning_job_resumes_after_its_last_measured_point(cs, monkeypatch, tmp_path):
    """cmd_tune keeps each measured point as it finishes (<csv>.partial.jsonl): killed mid-scan, the job measures
    only what is left, and its outputs equal an uninterrupted job's; a kept file of another job is not used."""
    import argparse
    import json
    ran = []

    def fake_run(spec, method, lr, seed, split, track=False, max_rounds=None):
        if len(ran) == stop_after[0]:
            raise KeyboardInterrupt  # the job is killed while measuring this point
        ran.append(lr)
        rounds = 100 * (1 + abs(math.log10(lr / 0.1)))  # best at 0.1; capped points stop as not reached
        return {"rounds": rounds if max_rounds is None or rounds <= max_rounds else math.inf,
                "forward_passes": rounds, "bytes": rounds, "final": 0.05 * lr, "seconds": lr}

    monkeypatch.setattr(cs, "measure", fake_run)
    spec = {"rounds": 10_000, "metric": "rel_suboptimality", "label": "p", "grid": [1e-3, 1e-2, 0.1, 1.0, 10.0]}

    def job(folder, seed=100):
        return argparse.Namespace(problem=json.dumps(spec), method=json.dumps({"label": "m", "name": "m"}),
                                  seed=seed, quick=False, csv=str(folder / "m.csv"), json=str(folder / "m.json"))
    stop_after = [None]
    cs.cmd_tune(job(tmp_path / "whole"))
    whole = list(ran)
    assert len(whole) >= 4 and not (tmp_path / "whole/m.csv.partial.jsonl").exists()
    ran.clear()
    stop_after[0] = 2
    with pytest.raises(KeyboardInterrupt):
        cs.cmd_tune(job(tmp_path / "killed"))
    partial = tmp_path / "killed/m.csv.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 3 and not (tmp_path / "killed/m.csv").exists()
    with open(partial, "a") as f:
        f.write('{"lr": 0.0')  # a point the kill interrupted while it was written
    ran.clear()
    stop_after[0] = None
    cs.cmd_tune(job(tmp_path / "killed"))
    assert ran == whole[2:]  # only the points the killed job had not finished
    for name in ("m.csv", "m.json"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert not partial.exists()
    ran.clear()  # another job's points (here another seed) are not taken
    (tmp_path / "other").mkdir()
    (tmp_path / "other/m.csv.partial.jsonl").write_text(
        json.dumps({"problem": spec, "method": {"label": "m", "name": "m"}, "grid": spec["grid"], "seed": 7}) + "\n"
        + json.dumps({"lr": 10.0, "cap": None, "row": {"rounds": 1, "final": 0.0}}) + "\n")
    cs.cmd_tune(job(tmp_path / "other"))
    assert ran == whole
