"""Tables from runs: the step size of a grid is chosen on the tuning run (dev split), never on reported seeds."""
import json
import math

import pandas as pd
import pytest
from conftest import workflow_script

from hiso.results import load_runs, summarise


def write_run(root, method, seed, accuracy, status="complete"):
    d = root / method / f"seed{seed}"
    d.mkdir(parents=True)
    rows = [{"round": r, "train_loss": 1.0, "bytes_up": 10, "bytes_down": 5, "forward_passes": 12,
             "wall_seconds": 0.1, "accuracy": a} for r, a in enumerate(accuracy, start=1)]
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    (d / "run.json").write_text(json.dumps({"status": status}))


def grid(tmp_path):
    # the tuning run (seed 100) prefers lr 0.1 (target at round 2 vs 3); the reported seeds prefer lr 0.01
    write_run(tmp_path, "hiso@0.01", 100, [0.2, 0.4, 0.6, 0.7])
    write_run(tmp_path, "hiso@0.1", 100, [0.3, 0.6, 0.6, 0.6])
    for s in (0, 1):
        write_run(tmp_path, "hiso@0.01", s, [0.6, 0.7, 0.8, 0.9])
        write_run(tmp_path, "hiso@0.1", s, [0.2, 0.3, 0.5, 0.55])
        write_run(tmp_path, "decomfl", s, [0.1, 0.3, 0.5, 0.6])
    return load_runs(tmp_path)


def test_best_lr_comes_from_the_tuning_run_and_tuning_runs_are_not_reported(tmp_path):
    t = summarise(grid(tmp_path), "accuracy", 0.5, tuning_seed=100).set_index("method")
    assert t.loc["hiso@0.1", "best lr"] and not t.loc["hiso@0.01", "best lr"]
    assert t.loc["decomfl", "best lr"]  # a method without a grid is its own choice
    assert (t["seeds"] == 2).all()  # seed 100 enters no statistic
    assert t.loc["hiso@0.1", "final accuracy mean"] == 0.55
    assert t.loc["hiso@0.1", "tuning rounds to target"] == 2 and t.loc["hiso@0.01", "tuning rounds to target"] == 3
    assert t.loc["hiso@0.01", "tuning final accuracy"] == 0.7
    assert math.isnan(t.loc["decomfl", "tuning rounds to target"])
    assert set(t.loc[["hiso@0.01", "hiso@0.1"], "lr chosen on"]) == {"tuning seed 100 (dev split)"}
    assert t.loc["decomfl", "lr chosen on"] == "fixed in the config"


def test_without_a_tuning_seed_the_table_says_it_chose_on_reported_seeds(tmp_path):
    runs = grid(tmp_path)
    t = summarise(runs[runs.seed != 100], "accuracy", 0.5).set_index("method")
    assert t.loc["hiso@0.01", "best lr"] and not t.loc["hiso@0.1", "best lr"]
    assert set(t.loc[["hiso@0.01", "hiso@0.1"], "lr chosen on"]) == {"reported seeds"}


def test_ties_on_the_tuning_run_go_to_the_better_final_metric(tmp_path):
    write_run(tmp_path, "decomfl@0.1", 100, [0.1, 0.6, 0.6])
    write_run(tmp_path, "decomfl@0.3", 100, [0.1, 0.6, 0.9])
    write_run(tmp_path, "decomfl@1", 100, [0.1, 0.2, 0.3], status="diverged")
    for m in ("decomfl@0.1", "decomfl@0.3", "decomfl@1"):
        write_run(tmp_path, m, 0, [0.5, 0.5, 0.5])
    t = summarise(load_runs(tmp_path), "accuracy", 0.5, tuning_seed=100).set_index("method")
    assert t["best lr"].to_dict() == {"decomfl@0.1": False, "decomfl@0.3": True, "decomfl@1": False}
    assert math.isnan(t.loc["decomfl@1", "tuning final accuracy"])  # a diverged tuning run has no final model


def test_the_listed_runs_are_the_table_not_whatever_lies_in_the_folder(tmp_path):
    """A method renamed or dropped from a tier leaves its old folder behind: the workflow lists its runs."""
    runs = grid(tmp_path)
    write_run(tmp_path, "hiso", 0, [0.9, 0.9, 0.9, 0.9])  # stale: from before hiso got an lr grid
    listed = [tmp_path / m / f"seed{s}" / "metrics.csv" for m, s in runs[["method", "seed"]].drop_duplicates().values]
    t = summarise(load_runs(paths=listed), "accuracy", 0.5, tuning_seed=100)
    assert "hiso" not in set(t.method) and "hiso" in set(load_runs(tmp_path).method)


def test_the_reference_of_the_to_best_columns_is_the_tuned_decomfl(tmp_path):
    write_run(tmp_path, "decomfl@0.01", 100, [0.1, 0.2, 0.6])
    write_run(tmp_path, "decomfl@0.03", 100, [0.1, 0.6, 0.6])  # chosen: target at round 2
    write_run(tmp_path, "decomfl@0.01", 0, [0.1, 0.2, 0.3])
    write_run(tmp_path, "decomfl@0.03", 0, [0.1, 0.9, 0.8])
    write_run(tmp_path, "hiso", 0, [0.1, 0.5, 0.95])
    t = summarise(load_runs(tmp_path), "accuracy", 0.5, tuning_seed=100).set_index("method")
    assert "rounds to decomfl@0.03's best (median)" in t.columns
    assert t.loc["hiso", "rounds to decomfl@0.03's best (median)"] == 3  # decomfl@0.03's best is 0.9


def test_rounds_to_best_and_the_papers_byte_convention(tmp_path):
    """Convergence round = first evaluation at the run's best value; paper bytes = 2 x uploaded scalars per
    client and round (40 B at P = 5), whatever headers and catch-up the wire carried."""
    from hiso.results import payload_per_client_round, rounds_to_best
    d = tmp_path / "hiso" / "seed0"
    d.mkdir(parents=True)
    rows = [{"round": r, "train_loss": 1.0, "bytes_up": 76, "bytes_down": 300, "bytes_up_scalars": 40,
             "accepted": 2, "rejected": 0, "forward_passes": 12, "wall_seconds": 0.1,
             "accuracy": {2: 0.5, 4: 0.8, 6: 0.8, 8: 0.7}.get(r)} for r in range(1, 9)]
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    run = load_runs(tmp_path)
    assert rounds_to_best(run, "accuracy") == 4.0
    assert payload_per_client_round(run) == 40.0
    table = summarise(run, "accuracy", 0.6)
    assert table.loc[0, "rounds to best (median)"] == 4.0 and table.loc[0, "payload bytes per client-round"] == 40.0


def test_compact_markdown_is_citable():
    from hiso.results import compact_markdown
    t = pd.DataFrame([
        {"method": "hiso@0.01", "seeds": 3, "seeds diverged": 0, "final accuracy mean": 0.912345,
         "final accuracy std": 0.0123456, "rounds to target (median)": 120.0, "bytes to target (median)": 123456.0,
         "best lr": True},
        {"method": "hiso@0.1", "seeds": 3, "seeds diverged": 3, "final accuracy mean": float("nan"),
         "final accuracy std": float("nan"), "rounds to target (median)": float("inf"),
         "bytes to target (median)": float("inf"), "best lr": False}])
    md = compact_markdown(t, "accuracy")
    assert "| hiso@0.01 ★" in md and "0.912 ± 0.0123 (3)" in md and "123,456" in md
    assert "all 3 diverged" in md and "not reached" in md and "★: the step size its tuning run chose" in md


def test_every_rounds_to_a_point_column_states_its_censoring():
    """A run that never reached the target or DeComFL's best is "not reached in R rounds" in every column that
    counts rounds or bytes to a point, never a bare "not reached" that hides how long it ran."""
    from hiso.results import compact_view
    inf = float("inf")
    t = pd.DataFrame({"method": ["decomfl", "hiso"], "label": ["DeComFL", "HiSo"], "seeds": [5, 5],
                      "seeds diverged": [0, 0], "rounds": [200, 200], "final test_loss mean": [0.93, 0.66],
                      "final test_loss std": [0.26, 0.08], "rounds to target (median)": [80.0, inf],
                      "bytes to target (median)": [25700.0, inf], "rounds to decomfl's best (median)": [120.0, inf]})
    view = compact_view(t, "test_loss")[0].set_index("method")
    assert view.loc["HiSo", "rounds to DeComFL's best"] == "not reached in 200 rounds"
    assert view.loc["HiSo", "rounds to target"] == view.loc["HiSo", "bytes to target"] == "not reached in 200 rounds"
    assert view.loc["DeComFL", "rounds to DeComFL's best"] == "120"


def test_a_step_size_chosen_at_the_edge_of_its_grid_is_marked_and_named(tmp_path):
    """hiso's tuning run picks 0.1, the largest of {0.01, 0.1}: the table marks it, the citable view names it
    with the grid, and an interior choice (decomfl: 0.3 of 0.1-1) is not marked."""
    from hiso.results import compact_markdown, edge_choices
    grid(tmp_path)
    write_run(tmp_path, "decomfl@0.1", 100, [0.1, 0.2, 0.6])
    write_run(tmp_path, "decomfl@0.3", 100, [0.6, 0.6, 0.9])
    write_run(tmp_path, "decomfl@1", 100, [0.1, 0.2, 0.3])
    for m in ("decomfl@0.1", "decomfl@0.3", "decomfl@1"):
        write_run(tmp_path, m, 0, [0.5, 0.5, 0.5])
    runs = load_runs(tmp_path)
    t = summarise(runs[runs.method != "decomfl"], "accuracy", 0.5, tuning_seed=100)
    edge = t.set_index("method")["lr at grid edge"].to_dict()
    assert edge == {"hiso@0.01": False, "hiso@0.1": True, "decomfl@0.1": False, "decomfl@0.3": False,
                    "decomfl@1": False}
    assert edge_choices(t) == ["hiso (0.1 of 0.01–0.1)"]
    md = compact_markdown(t, "accuracy")
    assert "| hiso@0.1 ★ (grid edge)" in md and "the edge of its grid" in md and "hiso (0.1 of 0.01–0.1)" in md


def test_counts_read_as_whole_numbers_and_bytes_up_and_down_apart(tmp_path):
    """Rounds are never '90.0' beside '110'; the citable view shows measured bytes per client-round up and down."""
    from hiso.results import _count, compact_markdown
    assert (_count(90.0), _count(110.0), _count(90.5), _count(123456.0)) == ("90", "110", "90.5", "123,456")
    for s in (0, 1):
        write_run(tmp_path, "fedzo", s, [0.4, 0.6])
    runs = load_runs(tmp_path)
    runs["accepted"], runs["rejected"] = 2, 0
    t = summarise(runs, "accuracy", 0.5)
    assert t.loc[0, "up bytes per client-round"] == 5 and t.loc[0, "down bytes per client-round"] == 2.5
    assert "| up / down B per client-round" in compact_markdown(t, "accuracy") and "5 / 2.5" in compact_markdown(
        t, "accuracy")


def test_seconds_keep_three_significant_digits():
    """A digits round takes milliseconds: the citable view prints 0.00688 s, not 0.0, and an LM run's 8,123 s whole."""
    from hiso.results import compact_markdown
    t = pd.DataFrame([{"method": "hiso", "seeds": 3, "seeds diverged": 0, "final accuracy mean": 0.5,
                       "final accuracy std": 0.1, "rounds to target (median)": 10.0,
                       "bytes to target (median)": 100.0, "seconds per round (mean)": 0.006876,
                       "seconds per run (median)": 9.9947},
                      {"method": "decomfl", "seeds": 3, "seeds diverged": 0, "final accuracy mean": 0.5,
                       "final accuracy std": 0.1, "rounds to target (median)": 10.0,
                       "bytes to target (median)": 100.0, "seconds per round (mean)": 12.345,
                       "seconds per run (median)": 8123.4}])
    md = compact_markdown(t, "accuracy")
    assert "| 0.00688 / 9.99 " in md and "| 12.3 / 8,123 " in md and "0.0 /" not in md


def test_ratios_against_decomfl_and_the_starting_model(tmp_path):
    """speed-up = DeComFL's rounds / the method's (to target, to DeComFL's best); bytes = the method's / DeComFL's;
    a count never reached has no ratio; `initial <metric> mean` is the round-0 evaluation of run.json."""
    for s in (0, 1):
        write_run(tmp_path, "decomfl", s, [0.1, 0.3, 0.5, 0.6])  # target 0.5 at round 3, its best at round 4
        write_run(tmp_path, "hiso", s, [0.5, 0.6, 0.7, 0.7])
        write_run(tmp_path, "fedzo", s, [0.1, 0.1, 0.1, 0.1])
        meta = tmp_path / "decomfl" / f"seed{s}" / "run.json"
        meta.write_text(json.dumps({"status": "complete", "initial_eval": {"accuracy": 0.1 + 0.1 * s}}))
    d = tmp_path / "fedzo"
    for s in (0, 1):  # ten times DeComFL's bytes per round
        m = pd.read_csv(d / f"seed{s}" / "metrics.csv").assign(bytes_up=100, bytes_down=50)
        m.to_csv(d / f"seed{s}" / "metrics.csv", index=False)
    t = summarise(load_runs(tmp_path), "accuracy", 0.5).set_index("method")
    assert t.loc["hiso", "speed-up to target over decomfl"] == 3.0
    assert t.loc["hiso", "speed-up to decomfl's best"] == 2.0  # DeComFL's best 0.6 at round 4, HiSo at 2
    assert math.isnan(t.loc["fedzo", "speed-up to target over decomfl"])
    assert t.loc["fedzo", "bytes per round over decomfl's"] == 10.0 and t.loc["decomfl", "bytes per round over decomfl's"] == 1.0
    assert math.isclose(t.loc["decomfl", "initial accuracy mean"], 0.15)
    assert math.isnan(t.loc["hiso", "initial accuracy mean"])  # its run.json has no round-0 evaluation


def test_the_papers_claims_are_ranges_over_its_reported_cells():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    claims = workflow_script("paper_claims").claims
    rep = pd.read_csv(root / "paper_results" / "reported.csv")
    c = claims(rep).set_index("method")
    t2 = rep[rep.source == "HiSo Table 2"].pivot_table(index=["model", "task"], columns="method", values="value")
    assert c.loc["hiso speed-up to decomfl's best", "cells"] == len(t2) == 9
    assert c.loc["hiso speed-up to decomfl's best", "max"] == (t2["decomfl"] / t2["hiso"]).max() == 1350 / 250
    assert c.loc["fedzo bytes over decomfl's", "cells"] == 3 and c.loc["fedzo bytes over decomfl's", "min"] > 1e7
    assert 0 < c.loc["fedavg metric minus decomfl's", "min"] <= c.loc["fedavg metric minus decomfl's", "max"]
    assert subprocess.run([sys.executable, str(root / "workflows/scripts/paper_claims.py"), "--reported",
                           str(root / "paper_results/reported.csv"), "--csv", "/dev/null"], cwd=root).returncode == 0


def test_a_page_s_readings_cite_any_table_beside_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame([{"method": "hiso", "seeds": 2, "seeds diverged": 0, "final accuracy mean": 0.5,
                   "final accuracy std": 0.1, "rounds to target (median)": 3.0, "bytes to target (median)": 90.0}]
                 ).to_csv(tables / "e.csv", index=False)
    pd.DataFrame([{"method": "hiso speed-up", "min": 1.4, "max": 5.4}]).to_csv(tables / "paper-claims.csv", index=False)
    readings = tmp_path / "r.md"
    readings.write_text("## e\n\nHiSo: {{e|hiso|rounds to target (median)}} rounds; paper: "
                        "{{paper-claims|hiso speed-up|min}}-{{paper-claims|hiso speed-up|max}}.\n")
    out = tmp_path / "page.md"
    subprocess.run([sys.executable, str(root / "workflows/scripts/results_page.py"), "--title", "t", "--tables",
                    str(tables), "--experiments", "e", "--readings", str(readings), "--command", "c", "--commit", "x",
                    "--date", "d", "--md", str(out)], check=True, cwd=root)
    assert "HiSo: 3 rounds; paper: 1.40-5.40." in out.read_text()


def test_claims_check_says_where_a_claim_holds_and_where_it_does_not():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    module = workflow_script("paper_claims")
    check, claims = module.check, module.claims
    paper = claims(pd.read_csv(root / "paper_results" / "reported.csv"))
    inf = math.inf
    summary = pd.DataFrame({  # a loss experiment: HiSo slower than DeComFL, FedAvg better, FedZO heavier
        "method": ["decomfl", "hiso", "fedzo", "fedavg"],
        "final test_loss mean": [0.9, 1.0, 0.95, 0.6],
        "speed-up to decomfl's best": [1.0, 0.5, 1.0, 3.0],
        "bytes to target over decomfl's": [1.0, inf, 2e4, 2e4],
        "bytes per round over decomfl's": [1.0, 1.0, 4.8e4, 4.8e4]})
    c = check(paper, {"e": summary}).set_index("method")
    assert c.loc["e: hiso speed-up to decomfl's best", "holds"] == "no"
    assert c.loc["e: hiso speed-up to decomfl's best", "range"] == "below the paper's cells"
    assert c.loc["e: hiso bytes over decomfl's", "holds"] == "not measured"  # HiSo never reached the target
    assert c.loc["e: fedzo bytes over decomfl's", "holds"] == "yes"
    assert c.loc["e: fedzo bytes over decomfl's", "range"] == "below the paper's cells"  # d = 1.3 B there
    # the paper's Table 3 cells are accuracy / F1: a test-loss lead is not their unit, so it is not compared
    assert c.loc["e: fedavg metric minus decomfl's", "holds"] == "not measured"
    with_acc = check(paper, {"e": summary.assign(**{"accuracy at the end (mean)": [0.6, 0.55, 0.58, 0.8]})})
    with_acc = with_acc.set_index("method")
    assert with_acc.loc["e: fedavg metric minus decomfl's", "measured"] == pytest.approx(0.2)
    assert with_acc.loc["e: fedavg metric minus decomfl's", "holds"] == "yes"
    assert with_acc.loc["e: fedavg metric minus decomfl's", "measured on"] == "accuracy"
    no_hiso = check(paper, {"e": summary[summary.method != "hiso"]}).set_index("method")
    assert no_hiso.loc["e: hiso speed-up to decomfl's best", "holds"] == "not measured"


def test_claims_check_bounds_a_ratio_where_only_one_method_reached_the_point():
    """A method that never reached a point needs more than its whole run: the ratio is one-sided, and the
    claim is decided where the bound decides it (never called 'not measured' when the runs do decide it)."""
    from pathlib import Path
    module = workflow_script("paper_claims")
    paper = module.claims(pd.read_csv(Path(__file__).resolve().parents[1] / "paper_results" / "reported.csv"))
    inf = math.inf
    summary = pd.DataFrame({  # 10 rounds of 275 B: HiSo reached the target, DeComFL did not; HiSo never
        "method": ["decomfl", "hiso"],  # reached DeComFL's best (round 8)
        "final test_loss mean": [1.0, 1.1], "rounds": [10, 10], "bytes per round (mean)": [275.0, 275.0],
        "rounds to decomfl's best (median)": [8.0, inf], "speed-up to decomfl's best": [1.0, math.nan],
        "bytes to target (median)": [inf, 2200.0], "bytes to target over decomfl's": [math.nan, math.nan],
        "bytes per round over decomfl's": [1.0, 1.0]})
    c = module.check(paper, {"e": summary}).set_index("method")
    speed = c.loc["e: hiso speed-up to decomfl's best"]
    assert (speed["bound"], speed["measured"], speed["holds"]) == ("at most", pytest.approx(0.8), "no")
    assert speed["range"] == "below the paper's cells; hiso never reached the point in its run"
    byts = c.loc["e: hiso bytes over decomfl's"]
    assert (byts["bound"], byts["measured"], byts["holds"]) == ("at most", pytest.approx(0.8), "yes")
    assert byts["range"] == "at most 0.8; the paper's cells span 0.389-2.2; decomfl never reached the point in its run"
    both_missed = summary.assign(**{"bytes to target (median)": [inf, inf]})
    c = module.check(paper, {"e": both_missed}).set_index("method")
    assert c.loc["e: hiso bytes over decomfl's", "holds"] == "not measured"
    assert c.loc["e: hiso bytes over decomfl's", "range"] == "neither method reached the point in the budget"
    slower = summary.assign(**{"bytes to target (median)": [2200.0, inf]})  # DeComFL reached it, HiSo not
    c = module.check(paper, {"e": slower}).set_index("method")
    assert (c.loc["e: hiso bytes over decomfl's", "bound"], c.loc["e: hiso bytes over decomfl's", "holds"]) \
        == ("at least", "no")


def test_readings_family_placeholders_read_grid_and_tuned_tables_alike(tmp_path):
    """{{exp|hiso*|col}} is the family at its chosen step size: the marked row of an lr_grid table, or the one row
    of a method tuned by a tuning job (tune / scan); {{exp|hiso*|lr}} reads `chosen lr` there."""
    page = workflow_script("results_page")
    grid = pd.DataFrame({"method": ["hiso@0.01", "hiso@0.03"], "family": ["hiso", "hiso"], "lr": [0.01, 0.03],
                         "best lr": [False, True], "final accuracy mean": [0.5, 0.7]})
    tuned = pd.DataFrame({"method": ["decomfl", "hiso"], "chosen lr": [0.1, 0.03], "final accuracy mean": [0.6, 0.7]})
    text = "{{e|hiso*|final accuracy mean}} at {{e|hiso*|lr}}"
    assert page.fill(text, {"e": grid}) == page.fill(text, {"e": tuned}) == "0.700 at 0.0300"
    with pytest.raises(KeyError, match="no such tuned method"):
        page.fill("{{e|fedzo*|lr}}", {"e": tuned})


def test_a_page_of_some_methods_drops_the_readings_that_cite_the_others():
    """results_page --methods: a paragraph or bullet citing a method the slice left out of an experiment is
    dropped whole; other tables (the paper's claims) are not sliced, and an unknown cell is still an error."""
    page = workflow_script("results_page")
    tables = {"e": pd.DataFrame({"method": ["decomfl", "hiso", "hiso+ulp"], "final m": [0.5, 0.4, 0.41]}),
              "claims-check": pd.DataFrame({"method": ["e: fedavg lead"], "holds": ["not measured"]})}
    text = ("HiSo {{e|hiso|final m}} against {{e|decomfl|final m}}.\n\n"
            "FedZO {{e|fedzo|final m}} and HiSo {{e|hiso|final m}}.\n\n"
            "- twin {{e|hiso+ulp|final m}}\n- FedAvg lead: {{claims-check|e: fedavg lead|holds}}\n- {{e|fedavg*|final m}}")
    assert page.fill(text, tables, ["hiso", "decomfl"], ("e",)) == \
        "HiSo 0.400 against 0.500.\n\n- twin 0.410\n- FedAvg lead: not measured"
    with pytest.raises(KeyError, match="fedzo"):
        page.fill(text, tables)  # the whole tier: a cited method without a row is a mistake in the readings
    with pytest.raises(KeyError, match="mezo"):
        page.fill("{{e|mezo|final m}}", tables, ["hiso", "decomfl", "mezo"], ("e",))


def test_a_page_of_some_methods_says_so_under_its_header(tmp_path):
    """A page written by a tier sliced to some methods names the slice before any reading (its title is the
    tier's, which may speak of every method); the whole tier's page says nothing of the kind."""
    from types import SimpleNamespace
    page = workflow_script("results_page")
    (tmp_path / "e.csv").write_text(pd.DataFrame({
        "method": ["decomfl", "hiso"], "seeds": [2, 2], "seeds diverged": [0, 0], "final m mean": [0.5, 0.4],
        "final m std": [0.1, 0.1], "rounds to target (median)": [3.0, 2.0],
        "bytes to target (median)": [30.0, 20.0]}).to_csv(index=False))
    args = dict(title="Every method", tables=str(tmp_path), figures_rel="f", experiments=["e"], sweeps=[],
                sensitivity=[], readings=None, command="snakemake", commit="abc", date="2026-01-01")
    sliced = page.render(SimpleNamespace(**args, methods=["hiso", "decomfl"]))
    assert ("This page holds the tier's methods matching `hiso` and `decomfl` (the command's `methods` slice); "
            "the tier's other methods are not on it.") in sliced
    assert "This page holds" not in page.render(SimpleNamespace(**args, methods=[]))
    assert "matching `hiso`, `decomfl` and `fedzo` (" in page.render(
        SimpleNamespace(**args, methods=["hiso", "decomfl", "fedzo"]))


def test_cpu_hours_are_process_time_where_runs_measured_it_and_rounds_before_it_are_counted_apart(tmp_path):
    """A run records each round's process CPU time beside its wall time (sharing the machine inflates only the
    latter); a table's `run CPU hours` sums it, and the wall time of rounds recorded before the column goes to
    `run hours without CPU time`, never into the CPU-hours; the page's compute line states the CPU-hours, that
    wall time and the total wall time apart, and a table without the columns keeps its old line."""
    from hiso.config import load_config
    from hiso.run import run
    res = run(load_config(data={"task": {"name": "quadratic", "dim": 20}, "federation": {"rounds": 3},
                                "run": {"progress": False, "eval_every": 3}}), tmp_path / "r")
    got = pd.read_csv(tmp_path / "r" / "metrics.csv")
    assert got["cpu_seconds"].notna().all() and (got["cpu_seconds"] >= 0).all() and res.status == "complete"
    write_run(tmp_path / "t", "decomfl", 0, [0.5, 0.6])
    write_run(tmp_path / "t", "hiso", 0, [0.5, 0.6])
    newer = tmp_path / "t" / "hiso" / "seed0" / "metrics.csv"
    pd.read_csv(newer).assign(wall_seconds=[9.0, 9.0], cpu_seconds=[1.0, math.nan]).to_csv(newer, index=False)
    table = summarise(load_runs(tmp_path / "t"), "accuracy", 0.55).set_index("method")
    assert table.loc["hiso", "run hours"] == pytest.approx(18 / 3600)
    assert table.loc["hiso", "run CPU hours"] == pytest.approx(1 / 3600)  # 1 s measured
    assert table.loc["hiso", "run hours without CPU time"] == pytest.approx(9 / 3600)  # 9 s of wall before it
    assert table.loc["decomfl", "run CPU hours"] == 0 and \
        table.loc["decomfl", "run hours without CPU time"] == pytest.approx(0.2 / 3600)
    page = workflow_script("results_page")
    t = pd.DataFrame({"run hours": [3.0], "run CPU hours": [1.0], "run hours without CPU time": [0.0]})
    line = page.compute_line({"e": t})
    assert line.startswith("Compute: 1.0 CPU-hours in all") and "3.0 hours of wall time" in line
    assert "before the runs recorded CPU time" not in line
    t2 = pd.DataFrame({"run hours": [2.0], "run CPU hours": [0.5], "run hours without CPU time": [1.25],
                       "tuning hours": [4.0], "tuning CPU hours": [1.5], "tuning hours without CPU time": [2.0]})
    line = page.compute_line({"e": t, "f": t2})
    assert line.startswith("Compute: 3.0 CPU-hours in all: the tables' runs 1.5") and "step-size scans 1.5" in line
    assert "another 3.2 hours of wall time" in line and "9.0 hours of wall time in all" in line
    assert page.compute_line({"e": t.drop(columns="run CPU hours")}).endswith("the sum of its rounds' wall seconds, "
                                                                             "evaluations included).")
