"""Step-size scans in the workflow (`scan:` in an experiment, hiso/scan.py): the protocol of hiso/tuning.py on
the dev split, extending past an edge where the best lies, resumable, planned and shown in the tables."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hiso import plan
from hiso.results import attach_choices, compact_markdown, edge_choices, summarise
from hiso.scan import scan

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["method=decomfl", "federation.rounds=60", "run.eval_every=10", "task.dev_fraction=0.15",
          "run.checkpoint_every=20"]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    # target 0: no point reaches it, so the final dev loss ranks them; on this budget 0.01 beats 0.003, so the
    # best starts at the grid's top edge and the scan must extend past it
    choice = scan(ROOT / "workflows/config/base/digits.yaml", DIGITS, "decomfl", [0.003, 0.01], 100, "test_loss",
                  0.0, root)
    return root, choice


def test_a_scan_extends_past_an_edge_until_an_inner_point_is_best(scanned):
    root, choice = scanned
    grid = {g["lr"]: g for g in choice["grid"]}
    assert any(g["note"] == "extended" and g["lr"] > 0.01 for g in grid.values())
    best = min(grid.values(), key=lambda g: g["final_test_loss"])
    assert choice["sets"] == {"federation.lr": best["lr"]} and choice["method"] == f"decomfl@{best['lr']:g}"
    assert min(grid) < best["lr"] < max(grid) and choice["at_grid_edge"] is False
    for g in grid.values():  # every tried point is a run folder of the tuning seed on the dev split
        meta = json.loads((root / g["method"] / "seed100" / "run.json").read_text())
        assert meta["config"]["run"]["eval_split"] == "dev" and meta["config"]["seed"] == 100
        assert meta["config"]["federation"]["lr"] == g["lr"]


def test_a_scan_run_again_reads_its_points_back_without_computing(scanned):
    root, choice = scanned
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/seed100/metrics.csv")}
    again = scan(ROOT / "workflows/config/base/digits.yaml", DIGITS, "decomfl", [0.003, 0.01], 100, "test_loss", 0.0,
                 root)
    assert again == choice
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/seed100/metrics.csv")} == stamps


def test_scan_lr_refuses_a_bad_value_before_compute_and_writes_nothing(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hiso", "scan-lr", "--config", "workflows/config/base/digits.yaml",
                        "--set", "method=decomfl", "--set", "federation.mu=-1", "--method", "decomfl", "--grid",
                        "0.01", "--seed", "100", "--metric", "accuracy", "--target", "0.5", "--root",
                        str(tmp_path / "runs"), "--out", str(tmp_path / "choice.json")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and "federation.mu" in p.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "choice.json").exists()


def tier(scan_spec):
    return {"results": "r", "seeds": [0, 1], "tuning_seed": 100,
            "experiments": {"e": {"base": "workflows/config/base/digits.yaml", "metric": "accuracy", "target": 0.5,
                                  "tuning_sets": {"task.dev_fraction": 0.15},
                                  "methods": {"decomfl": {"method": "decomfl"}, "fedavg": {"method": "fedavg",
                                                                                           "federation.lr": 0.3}},
                                  "scan": scan_spec}}}


def test_plan_a_scanned_method_reports_at_its_choice_and_checks_the_scan_config():
    cfg = tier({"decomfl": [0.03, 0.01]})
    exps = plan.experiments(cfg)
    spec = exps["e"]
    assert spec["scans"] == {"decomfl": [0.01, 0.03]} and spec["choices"] == {"decomfl": []}
    assert plan.lr_source(spec, "decomfl") == "decomfl" and plan.lr_source(spec, "fedavg") is None
    assert plan.runs_of(cfg, spec) == [("decomfl", 0), ("decomfl", 1), ("fedavg", 0), ("fedavg", 1)]
    loaded = {(m, s): c for _, m, s, c in plan.run_configs(cfg, exps, ROOT)}
    scan_cfg = loaded[("decomfl@0.03", 100)]  # the scan's first point, as its job loads it
    assert scan_cfg.run.eval_split == "dev" and scan_cfg.task["dev_fraction"] == 0.15
    assert "run.eval_split=dev" in plan.scan_overrides(cfg, spec, "decomfl")


@pytest.mark.parametrize("bad,why", [({"fedzo": [0.01]}, "does not run"), ({"decomfl": [0.0, 0.01]}, "positive"),
                                     ({"decomfl": []}, "positive")])
def test_plan_refuses_a_scan_it_cannot_run(bad, why):
    with pytest.raises(ValueError, match=why):
        plan.experiments(tier(bad))


@pytest.mark.parametrize("hold", [False, True])
def test_the_workflow_runs_a_scan_job_before_the_method_s_reported_runs(tmp_path, hold):
    path = tmp_path / "scan.yaml"
    cfg = tier({"decomfl": [0.01, 0.03]})
    cfg["results"] = str(tmp_path / "r")
    if hold:
        cfg["experiments"]["e"]["scan_hold"] = True
    else:  # the full-grid protocol scored by early stopping: the job passes its seeds and criterion
        cfg["experiments"]["e"].update(scan_seeds=[100, 101], scan_criterion="best")
    path.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--cores", "1", "--configfile",
                        str(path)], cwd=ROOT, capture_output=True, text=True, check=True)
    out = p.stdout
    assert out.count("-m hiso scan-lr") == 1
    assert ("--grid 0.01 0.03 --seed 100" if hold else "--grid 0.01 0.03 --seeds 100 101") in out
    assert ("--hold" in out) == hold  # scan_hold: true -> hiso/scan.py's hold criterion
    assert ("--criterion best" in out) == (not hold)
    assert "--set-file " + str(tmp_path / "r/tuning/e/decomfl.json") in out
    assert "--choices " + str(tmp_path / "r/tuning/e/decomfl.json") in out  # the table shows the choice


def test_tables_show_the_chosen_step_size_the_points_tried_and_an_edge(tmp_path):
    rows = []
    for method in ("decomfl", "fedavg"):
        for seed in (0, 1):
            d = tmp_path / method / f"seed{seed}"
            d.mkdir(parents=True)
            pd.DataFrame([{"round": r, "accuracy": 0.2 * r, "bytes_up": 10, "bytes_down": 10, "forward_passes": 6,
                           "wall_seconds": 2.0 + seed, "train_loss": 1.0} for r in (1, 2, 3)]).to_csv(
                d / "metrics.csv", index=False)
            rows.append(d / "metrics.csv")
    from hiso.results import load_runs
    table = summarise(load_runs(paths=rows), "accuracy", 0.5)
    assert table.set_index("method").loc["decomfl", "seconds per round (mean)"] == 2.5
    assert table.set_index("method").loc["decomfl", "seconds per run (median)"] == 7.5
    choice = {"sets": {"federation.lr": 0.03}, "method": "decomfl@0.03", "at_grid_edge": True,
              "grid": [{"lr": 0.01, "rounds_to_target": None, "diverged": False, "note": "grid"},
                       {"lr": 0.03, "rounds_to_target": 3, "diverged": False, "note": "extended"}]}
    shown = attach_choices(table, {"decomfl": choice}).set_index("method")
    assert shown.loc["decomfl", "chosen lr"] == 0.03 and bool(shown.loc["decomfl", "lr at grid edge"])
    assert shown.loc["decomfl", "lrs tried"] == "0.01: not reached; 0.03: 3 (extended)"
    assert not bool(shown.loc["fedavg", "lr at grid edge"]) and pd.isna(shown.loc["fedavg", "chosen lr"])
    assert edge_choices(shown.reset_index()) == ["decomfl (0.03 of 0.01–0.03)"]
    md = compact_markdown(shown.reset_index(), "accuracy")
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert cells["decomfl (grid edge)"][0] == "0.03" and cells["fedavg"][0] == "–"
    assert cells["decomfl (grid edge)"][-1] == "2.50 / 7.50"  # seconds per round / per run (median of 6 and 9 s)



def test_tuning_hours_sum_a_scans_runs_and_rounds_without_cpu_time_are_counted_apart():
    """CPU-hours are process time only: the wall time of rounds run before the runner recorded it is counted apart,
    from the scan's per-run sums, or from the tuning runs' rows where summarise.py has them."""
    table = pd.DataFrame({"method": ["decomfl", "hiso", "fedavg"]})
    grid = [{"lr": 0.01, "score": 0.5, "mean_last3_test_loss": 0.5, "diverged": False}]
    new = {"sets": {"federation.lr": 0.01}, "grid": grid,  # one tuning run resumed across the CPU column
           "runs": [{"wall_seconds": 3600.0, "cpu_seconds": 1800.0, "wall_seconds_without_cpu": 900.0},
                    {"wall_seconds": 1800.0, "cpu_seconds": 0.0, "wall_seconds_without_cpu": 1800.0}]}
    old = {"sets": {"federation.lr": 0.01}, "grid": grid, "runs": [{"wall_seconds": 7200.0}]}
    rows = pd.DataFrame({"wall_seconds": [1800.0, 3600.0, 900.0], "cpu_seconds": [math.nan, 1000.0, 800.0],
                         "method": ["fedavg@0.1", "fedavg@0.1", "fedavg@0.01"], "seed": [100, 100, 100],
                         "mixed_code": [True, True, False]})  # one of its two tuning runs resumed under other code
    hiso_rows = rows.assign(method="hiso@0.01", mixed_code=False)
    shown = attach_choices(table, {"decomfl": new, "hiso": old, "fedavg": old},
                           {"fedavg": rows, "hiso": hiso_rows}).set_index("method")
    assert shown.loc["decomfl", "tuning hours"] == 1.5 and shown.loc["decomfl", "tuning CPU hours"] == 0.5
    assert shown.loc["decomfl", "tuning hours without CPU time"] == 0.75
    assert shown.loc["hiso", "tuning hours"] == 1.75 and shown.loc["hiso", "tuning runs resumed under other code"] == 0
    shown_json = attach_choices(table, {"hiso": old}).set_index("method")  # the JSON's sums of a run before CPU time
    assert shown_json.loc["hiso", "tuning hours"] == 2.0 and "tuning CPU hours" not in shown_json
    assert shown.loc["fedavg", "tuning hours"] == 1.75 and shown.loc["fedavg", "tuning CPU hours"] == 0.5
    assert shown.loc["fedavg", "tuning hours without CPU time"] == 0.5  # the rows win over the JSON's sums
    assert shown.loc["fedavg", "tuning runs resumed under other code"] == 1
    assert pd.isna(shown.loc["decomfl", "tuning runs resumed under other code"])  # no rows: not known, not 0

CURVES = {0.1: [0.9, 0.4, 0.6, 1.0, 1.5],  # reaches the target (0.5) at round 4, then leaves it
          0.03: [0.9, 0.7, 0.45, 0.4, 0.35],  # reaches it at round 6 and stays
          0.01: [0.95, 0.9, 0.8, 0.7, 0.6]}


def fake_run(cfg, out, replace_different=False, on_evaluate=None, continue_stopped=False):
    """The runner's contract for a scan, on test-loss curves given per step size (evaluations every 2 of 10
    rounds; a step size not in CURVES stays at 2.0): stops where on_evaluate says so."""
    curve = CURVES.get(round(cfg.federation.lr, 6), [2.0] * 5)
    rows = []
    for i, loss in enumerate(curve):
        for r in (2 * i + 1, 2 * i + 2):
            rows.append({"round": r, "test_loss": loss if r % 2 == 0 else None, "bytes_up": 10, "bytes_down": 10,
                         "forward_passes": 12, "wall_seconds": 1.0})
        if on_evaluate(None, None, rows[-1]):
            break
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    (out / "run.json").write_text(json.dumps({"status": "complete"}))


@pytest.mark.parametrize("hold, chosen", [(False, 0.1), (True, 0.03)])
def test_a_hold_scan_rejects_a_step_size_that_reaches_the_target_and_leaves_it(tmp_path, monkeypatch, hold, chosen):
    """By default the first round at the target ranks a point (0.1: round 4, then it leaves the target); with
    hold, only the round from which it stays there to the end of the budget does (0.03: round 6)."""
    import hiso.runner
    monkeypatch.setattr(hiso.runner, "run", fake_run)
    sets = ["method=decomfl", "federation.rounds=10", "run.eval_every=2"]
    choice = scan(ROOT / "workflows/config/base/digits.yaml", sets, "decomfl", [0.01, 0.03, 0.1], 100,
                  "test_loss", 0.5, tmp_path, hold=hold)
    assert choice["sets"] == {"federation.lr": chosen}
    grid = {g["lr"]: g for g in choice["grid"]}
    assert grid[0.1]["rounds_to_target"] == (None if hold else 4)
    assert grid[0.1]["rounds_run"] == (10 if hold else 4)  # a hold scan never stops at the target
    assert grid[0.03]["rounds_to_target"] == 6
    assert {g["criterion"] for g in grid.values()} == {"target held to the end" if hold else "target reached"}


def test_to_hold_counts_from_the_round_after_which_the_target_holds():
    from hiso.results import to_hold, to_target
    run = pd.DataFrame({"round": [2, 4, 6, 8, 10], "test_loss": [0.9, 0.4, 0.6, 0.45, 0.4],
                        "cum_bytes_total": [2, 4, 6, 8, 10], "cum_forward_passes": [1, 2, 3, 4, 5],
                        "cum_wall_seconds": [1.0, 2, 3, 4, 5]})
    assert to_target(run, "test_loss", 0.5)["rounds"] == 4
    assert to_hold(run, "test_loss", 0.5) == {"rounds": 8, "bytes": 8, "forward_passes": 4, "seconds": 4.0}
    assert to_hold(run.assign(test_loss=[0.9, 0.4, 0.4, 0.4, 0.6]), "test_loss", 0.5)["rounds"] == float("inf")
    assert to_hold(run.assign(accuracy=[0.5, 0.8, 0.9, 0.7, 0.9]), "accuracy", 0.8)["rounds"] == 10


QUAD = ["method=decomfl", "federation.rounds=40", "run.eval_every=10"]


@pytest.fixture(scope="module")
def grid_scanned(tmp_path_factory):
    from hiso.scan import scan_grid
    root = tmp_path_factory.mktemp("scan_grid")
    # on 40 rounds of the quadratic, larger step sizes end lower up to about 0.3: a grid of 0.01 and 0.03 has its
    # best at the top edge and must be extended until an inner point is best
    choice = scan_grid(ROOT / "workflows/config/base/quadratic.yaml", QUAD, "decomfl", [0.01, 0.03], [100, 101],
                       "rel_suboptimality", root)
    return root, choice


def test_full_grid_protocol_runs_every_point_on_every_tuning_seed_and_ends_interior(grid_scanned):
    root, choice = grid_scanned
    lrs = sorted(g["lr"] for g in choice["grid"])
    assert len(lrs) >= 3 and choice["at_grid_edge"] is False
    assert {g["note"] for g in choice["grid"]} == {"grid", "extended"}
    chosen = choice["sets"]["federation.lr"]
    assert lrs[0] < chosen < lrs[-1]
    runs = pd.DataFrame(choice["runs"])
    assert all(tuple(sorted(v)) == (100, 101) for _, v in runs.groupby("lr")["seed"])  # equal effort per point
    for g in choice["grid"]:  # the score is the mean over seeds of the last-3 dev evaluations
        per_seed = runs[runs.lr == g["lr"]]["last3_rel_suboptimality"]
        assert g["score"] == pytest.approx(per_seed.mean())
        for seed in (100, 101):
            metrics = pd.read_csv(root / g["method"] / f"seed{seed}" / "metrics.csv")
            assert metrics["rel_suboptimality"].dropna().iloc[-3:].mean() == pytest.approx(
                float(runs[(runs.lr == g["lr"]) & (runs.seed == seed)]["last3_rel_suboptimality"].iloc[0]))
    assert min(choice["grid"], key=lambda g: g["score"])["lr"] == chosen


def test_full_grid_protocol_in_the_tables_and_the_sensitivity_figure(grid_scanned, tmp_path):
    root, choice = grid_scanned
    path = tmp_path / "decomfl.json"
    path.write_text(json.dumps(choice))
    table = attach_choices(pd.DataFrame({"method": ["decomfl"]}), {"decomfl": choice})
    assert table.loc[0, "chosen lr"] == choice["sets"]["federation.lr"]
    assert table.loc[0, "lrs tried"].count(";") == len(choice["grid"]) - 1 and "(extended)" in table.loc[0, "lrs tried"]
    png = tmp_path / "s.png"
    subprocess.run([sys.executable, "-m", "figures.sensitivity", "--choices", str(path), "--metric",
                    "rel_suboptimality", "--png", str(png), "--pdf", str(tmp_path / "s.pdf")], cwd=ROOT, check=True,
                   capture_output=True)
    from figures.style import check_figure_data
    data = json.loads(png.with_suffix(".data.json").read_text())
    assert check_figure_data(data) == []
    line = next(ln for ln in data["panels"][0]["lines"] if ln["label"].startswith("DeComFL"))
    assert line["x"] == sorted(g["lr"] for g in choice["grid"])
    assert line["label"].endswith("(2 tuning seeds, 40 rounds)")  # how long the scores' runs were


def test_summarise_reads_a_scans_compute_from_its_tuning_runs_rows(grid_scanned, tmp_path):
    """The workflow's table job finds a scan's tuning runs beside its choice (scan_run_dirs: <results>/tuning/<exp>/
    <method>.json, runs under <results>/runs/<exp>) and sums their rows: every round measured CPU time, so nothing
    is counted as wall time without it, and no run resumed under other code."""
    import shutil
    root, choice = grid_scanned
    runs = tmp_path / "r" / "runs" / "e"
    shutil.copytree(root, runs)
    (tmp_path / "r" / "tuning" / "e").mkdir(parents=True)
    path = tmp_path / "r" / "tuning" / "e" / "decomfl.json"
    path.write_text(json.dumps(choice))
    from hiso.scan import scan_run_dirs
    dirs = scan_run_dirs(path)
    assert len(dirs) == 2 * len(choice["grid"]) and all((d / "metrics.csv").is_file() for d in dirs)
    assert all(r["wall_seconds_without_cpu"] == 0 and r["cpu_seconds"] > 0 for r in choice["runs"])
    reported = runs / "decomfl" / "seed0"  # a reported run: the chosen point's first tuning run, renamed
    shutil.copytree(runs / choice["method"] / "seed100", reported)
    csv = tmp_path / "t.csv"
    subprocess.run([sys.executable, "workflows/scripts/summarise.py", "--metrics", str(reported / "metrics.csv"),
                    "--metric", "rel_suboptimality", "--target", "0.1", "--csv", str(csv), "--md", str(tmp_path / "t.md"),
                    "--choices", str(path)], cwd=ROOT, check=True, capture_output=True)
    row = pd.read_csv(csv).set_index("method").loc["decomfl"]
    wall = sum(pd.read_csv(d / "metrics.csv")["wall_seconds"].sum() for d in dirs)
    assert row["tuning hours"] == pytest.approx(wall / 3600)
    assert 0 < row["tuning CPU hours"] and row["tuning hours without CPU time"] == 0
    assert row["tuning runs resumed under other code"] == 0


def test_plan_passes_scan_seeds_and_refuses_reported_ones():
    cfg = {"seeds": [0, 1], "experiments": {"e": {
        "base": "workflows/config/base/quadratic.yaml", "metric": "rel_suboptimality", "target": 0.1,
        "methods": {"decomfl": {"method": "decomfl"}, "hiso": {"method": "hiso", "seeds": [0, 1, 2, 3]}},
        "scan": {"decomfl": [0.01, 0.1], "hiso": [0.01, 0.1]}, "scan_seeds": [100, 101]}}}
    spec = plan.experiments(cfg)["e"]
    assert sorted(plan.runs_of(cfg, spec)) == sorted([("decomfl", 0), ("decomfl", 1)] + [("hiso", s) for s in range(4)])
    for bad in ([1, 100], [], [-1], "100"):
        cfg["experiments"]["e"]["scan_seeds"] = bad
        with pytest.raises(ValueError, match="scan_seeds"):
            plan.experiments(cfg)
    cfg["experiments"]["e"]["scan_seeds"] = [100, 101]
    cfg["experiments"]["e"]["scan_criterion"] = "best"  # early stopping on dev: the tier's scan jobs pass it
    assert plan.experiments(cfg)["e"]["scan_criterion"] == "best"
    del cfg["experiments"]["e"]["scan_seeds"]  # without the full-grid protocol there is nothing for it to score
    with pytest.raises(ValueError, match="scan_criterion 'best' scores the full-grid protocol's points"):
        plan.experiments(cfg)


def test_a_tier_plans_again_after_its_scan_wrote_its_points(grid_scanned, tmp_path):
    """The second invocation of a tier checks its existing run folders (plan.check_runs), a scan's tried points
    among them (`<method>@<lr>/seed<tuning seed>`, no method of the tier): it plans, and refuses nothing."""
    root, _ = grid_scanned
    cfg = {"seeds": [0], "experiments": {"e": {
        "base": "workflows/config/base/quadratic.yaml", "metric": "rel_suboptimality", "target": 0.1,
        "sets": {"federation.rounds": 40, "run.eval_every": 10}, "methods": {"decomfl": {"method": "decomfl"}},
        "scan": {"decomfl": [0.01, 0.03]}, "scan_seeds": [100, 101]}}}
    exps = plan.experiments(cfg)
    out = tmp_path / "r"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "e").symlink_to(root)  # the scan's run folders, as a tier's results hold them
    assert plan.check_runs(cfg, exps, ROOT, out) == 2  # the reported run and the scan's first point


def test_a_point_that_diverges_before_its_first_evaluation_ranks_last(tmp_path):
    """lr 1000 explodes in round 2, before the first evaluation (round 20): its metrics.csv has no metric column.
    Both scan protocols record it as diverged and choose among the others (a KeyError stopped the scan before)."""
    sets = ["method=decomfl", "federation.rounds=40", "run.eval_every=20", "run.eval_split=dev"]
    base = ROOT / "workflows/config/base/quadratic.yaml"
    choice = scan(base, sets, "decomfl", [0.001, 1000.0], 100, "rel_suboptimality", 0.0, tmp_path / "a")
    grid = {g["lr"]: g for g in choice["grid"]}
    assert grid[1000.0]["diverged"] and grid[1000.0]["rounds_run"] < 20
    assert choice["sets"]["federation.lr"] < 1000.0
    from hiso.scan import scan_grid
    choice = scan_grid(base, sets, "decomfl", [0.001, 0.01, 1000.0], [100, 101], "rel_suboptimality",
                       tmp_path / "b", max_extension=0)
    assert [g["lr"] for g in choice["grid"] if g["diverged"]] == [1000.0]
    assert choice["sets"] == {"federation.lr": 0.01}


def test_an_experiment_names_its_reference_and_the_table_compares_with_it(tmp_path):
    """`reference:` picks the method the table's paired claims use (default decomfl); one the experiment does not
    run is refused at planning, naming it."""
    cfg = tier({"decomfl": [0.03, 0.01]})
    cfg["experiments"]["e"]["reference"] = "fedavg"
    assert plan.experiments(cfg)["e"]["reference"] == "fedavg"
    cfg["experiments"]["e"]["reference"] = "identity"
    with pytest.raises(ValueError, match="reference 'identity' is not one of its methods"):
        plan.experiments(cfg)
    for method, final in (("identity", [0.5, 0.6, 0.7]), ("diagonal", [0.3, 0.35, 0.45])):
        for seed, value in enumerate(final):
            out = tmp_path / method / f"seed{seed}"
            out.mkdir(parents=True)
            pd.DataFrame({"round": [1, 2], "bytes_up": 1, "bytes_down": 1, "forward_passes": 1, "wall_seconds": 0.1,
                          "rel_suboptimality": [1.0, value]}).to_csv(out / "metrics.csv", index=False)
    subprocess.run([sys.executable, "workflows/scripts/summarise.py", "--root", str(tmp_path), "--metric",
                    "rel_suboptimality", "--target", "0.1", "--reference", "identity", "--csv", str(tmp_path / "t.csv"),
                    "--md", str(tmp_path / "t.md")], cwd=ROOT, check=True, capture_output=True)
    table = pd.read_csv(tmp_path / "t.csv").set_index("method")
    assert table.loc["identity", "claim vs identity"] == "reference"
    assert table.loc["diagonal", "final minus identity's (mean)"] == pytest.approx(-0.7 / 3, abs=1e-9)


def test_full_grid_protocol_scored_by_the_best_dev_evaluation_reads_back_the_same_runs(grid_scanned, tmp_path):
    """`criterion="best"` (scan_criterion: best, early stopping) scores each point by the mean over tuning seeds of
    its best dev evaluation; run on the runs a last-3 scan left, it computes no round (every point is read back),
    keeps both summaries, and its sensitivity figure says what scored the points."""
    from hiso.scan import scan_grid
    root, last = grid_scanned
    before = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.csv")}
    choice = scan_grid(ROOT / "workflows/config/base/quadratic.yaml", QUAD, "decomfl", [0.01, 0.03], [100, 101],
                       "rel_suboptimality", root, criterion="best")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("metrics.csv")} == before  # read back, none rerun
    assert choice["scored_by"]["criterion"] == "best" and last["scored_by"]["criterion"] == "last"
    runs = pd.DataFrame(choice["runs"])
    for g in choice["grid"]:
        per_seed = runs[runs.lr == g["lr"]]
        assert g["score"] == pytest.approx(per_seed["best_rel_suboptimality"].mean())
        assert g["mean_best_rel_suboptimality"] == g["score"]
        assert g["mean_last3_rel_suboptimality"] == pytest.approx(per_seed["last3_rel_suboptimality"].mean())
        assert g["criterion"].endswith("of the best dev evaluation")
    assert min(choice["grid"], key=lambda g: g["score"])["lr"] == choice["sets"]["federation.lr"]
    path = tmp_path / "decomfl.json"
    path.write_text(json.dumps(choice))
    table = attach_choices(pd.DataFrame({"method": ["decomfl"]}), {"decomfl": choice})
    best = min(choice["grid"], key=lambda g: g["lr"])
    assert f"{best['lr']:g}: {best['mean_best_rel_suboptimality']:.4g}" in table.loc[0, "lrs tried"]
    png = tmp_path / "s.png"
    subprocess.run([sys.executable, "-m", "figures.sensitivity", "--choices", str(path), "--metric",
                    "rel_suboptimality", "--png", str(png), "--pdf", str(tmp_path / "s.pdf")], cwd=ROOT, check=True,
                   capture_output=True)
    data = json.loads(png.with_suffix(".data.json").read_text())
    assert "best evaluation" in json.dumps(data)
    with pytest.raises(ValueError, match="scan criterion 'first'"):
        scan_grid(ROOT / "workflows/config/base/quadratic.yaml", QUAD, "decomfl", [0.01], [100], "rel_suboptimality",
                  root, criterion="first")
