"""A page's runs committed beside it (`page: {runs: true}`, workflows/scripts/page_runs.py): the page rule archives
every run and choice it stands on, and a replay of them makes the workflow rebuild the same tables and page without
computing a round."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "workflows" / "scripts" / "page_runs.py"


def page_runs(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def finished(run: Path, rows: int = 3) -> Path:
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("round,test_loss\n" + "".join(f"{r},{1 / (r + 1)}\n" for r in range(rows)))
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    (run / "checkpoint.pt").write_bytes(b"not archived")
    return run / "metrics.csv"


def test_archive_keeps_every_run_a_scan_lists_and_replay_orders_choices_before_runs(tmp_path):
    results, page = tmp_path / "results", tmp_path / "page"
    runs = [finished(results / "runs" / "e" / m / "seed0") for m in ("decomfl", "hiso", "hiso+ulp")]
    finished(results / "runs" / "e" / "hiso@0.01" / "seed100")  # inside the scan job: no workflow output
    finished(results / "runs" / "e" / "stale" / "seed0")  # another config's run in the same folder: left out
    choice = results / "tuning" / "e" / "hiso.json"
    choice.parent.mkdir(parents=True)
    choice.write_text(json.dumps({"sets": {"federation.lr": 0.01}, "runs": [{"method": "hiso@0.01", "seed": 100}]}))
    p = page_runs("archive", "--results", results, "--to", page, "--runs", *runs, "--choices", choice)
    assert p.returncode == 0, p.stderr
    kept = sorted(str(f.relative_to(page)) for f in page.rglob("*") if f.is_file())
    assert kept == sorted([f"runs/e/{m}/seed{s}/{f}" for m, s in (("decomfl", 0), ("hiso", 0), ("hiso+ulp", 0),
                                                                   ("hiso@0.01", 100)) for f in ("metrics.csv", "run.json")]
                          + ["tuning/e/hiso.json"])
    assert (page / "runs/e/hiso/seed0/metrics.csv").read_bytes() == runs[1].read_bytes()

    again = tmp_path / "again"
    checkout = tmp_path / "base.yaml"  # a scan's input, as a clone made a moment before the replay writes it
    checkout.write_text("task: {name: quadratic}\n")
    p = page_runs("replay", "--page", page, "--to", again)
    assert p.returncode == 0 and "replayed 4 runs and jobs" in p.stdout, p.stderr
    assert (again / "tuning/e/hiso.json").read_bytes() == choice.read_bytes()
    stamp = (again / "tuning/e/hiso.json").stat().st_mtime
    assert (again / "runs/e/hiso@0.01/seed100/metrics.csv").stat().st_mtime > stamp
    assert stamp >= checkout.stat().st_mtime, "the choices are older than the checkout's configs: scans would rerun"
    (page / "runs/e/hiso/seed0/metrics.csv").write_text("round\n1\n")  # a replay never overwrites a folder's runs
    p = page_runs("replay", "--page", page, "--to", again)
    assert p.returncode == 2 and "already holds 9 of these files" in p.stderr
    assert (again / "runs/e/hiso/seed0/metrics.csv").read_bytes() == runs[1].read_bytes()


def test_archive_refuses_an_unfinished_run_and_replay_a_page_without_runs(tmp_path):
    results = tmp_path / "results"
    partial = results / "runs" / "e" / "hiso" / "seed0"
    partial.mkdir(parents=True)
    (partial / "metrics.partial.csv").write_text("round\n1\n")
    p = page_runs("archive", "--results", results, "--to", tmp_path / "page", "--runs", partial / "metrics.csv")
    assert p.returncode == 2 and "no metrics.csv" in p.stderr and not (tmp_path / "page" / "runs" / "e").exists()
    p = page_runs("replay", "--page", ROOT / "docs" / "results" / "default", "--to", tmp_path / "out")
    assert p.returncode == 2 and "runs: true" in p.stderr and not (tmp_path / "out").exists()


def test_save_keeps_finished_runs_and_choices_only_and_is_idempotent(tmp_path):
    """`save` (a long tier carried to another machine): complete and diverged runs and every choice are copied;
    a run still going, a failed one (the workflow reruns it) and checkpoints are not; a second save changes
    nothing, and a run that finished since is added."""
    results, saved = tmp_path / "results", tmp_path / "saved"
    finished(results / "runs" / "e" / "hiso" / "seed0")
    for method, status in (("hiso@0.02", "diverged"), ("hiso@0.01", "running"), ("decomfl", "failed")):
        finished(results / "runs" / "e" / method / "seed100")
        (results / "runs" / "e" / method / "seed100" / "run.json").write_text(json.dumps({"status": status}))
    (results / "runs" / "e" / "hiso" / "seed0" / "run.json").write_text(json.dumps({"status": "complete"}))
    choice = results / "tuning" / "e" / "hiso.json"
    choice.parent.mkdir(parents=True)
    choice.write_text(json.dumps({"sets": {"federation.lr": 0.01}, "runs": []}))
    p = page_runs("save", "--results", results, "--to", saved)
    assert p.returncode == 0 and "saved 2 finished runs and jobs" in p.stdout and "(2 new or changed)" in p.stdout, p.stderr
    kept = sorted(str(f.relative_to(saved)) for f in saved.rglob("*") if f.is_file())
    assert kept == sorted([f"runs/e/{m}/{f}" for m in ("hiso/seed0", "hiso@0.02/seed100")
                           for f in ("metrics.csv", "run.json")] + ["tuning/e/hiso.json"])
    p = page_runs("save", "--results", results, "--to", saved)
    assert "saved 2 finished runs and jobs" in p.stdout and "(0 new or changed)" in p.stdout
    (results / "runs" / "e" / "hiso@0.01" / "seed100" / "run.json").write_text(json.dumps({"status": "complete"}))
    p = page_runs("save", "--results", results, "--to", saved)
    assert "saved 3 finished runs and jobs" in p.stdout and "(1 new or changed)" in p.stdout
    assert (saved / "runs/e/hiso@0.01/seed100/metrics.csv").is_file()
    assert not list(saved.rglob("checkpoint*")) and not list(saved.rglob("*.tmp"))
    p = page_runs("save", "--results", tmp_path / "nothing", "--to", tmp_path / "none")
    assert p.returncode == 2 and "no runs/ or study/ folder" in p.stderr and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_a_replayed_page_is_rebuilt_without_a_run_and_equals_the_archived_one(tmp_path):
    """The smoke tier's digits sliced to DeComFL (an lr grid with tuning runs, rounding twins) with a page that
    archives its runs: replayed into a fresh results folder, the workflow runs no run job and writes the same tables
    and page, whose command names the slice."""
    from test_workflow import SNAKEMAKE, job_counts, workflow_copy
    repo = workflow_copy(tmp_path)
    page = tmp_path / "page.yaml"  # a page that archives its runs, added to the smoke tier
    page.write_text("page: {name: smoke, title: smoke digits, runs: true}\n")
    first, second = tmp_path / "first", tmp_path / "second"
    base = [SNAKEMAKE, "--cores", "2", "--configfile", "workflows/config/smoke.yaml", str(page), "--config",
            "only=[digits]", "methods=[decomfl*]"]  # DeComFL's lr grid, its tuning runs and twins; no HiSo
    subprocess.run(base + [f"results={first}", "-q"], cwd=repo, check=True, capture_output=True, text=True)
    archived = first / "pages" / "smoke"
    ran = sorted(p.relative_to(first) for p in (first / "runs").glob("digits/*/seed*/metrics.csv"))
    assert len(ran) == 8  # 2 grid points on 2 seeds, a tuning run and a rounding twin per grid point
    assert "--config 'only=[digits] methods=[decomfl*]'" in (first / "pages" / "smoke.md").read_text()
    assert sorted(p.relative_to(archived) for p in archived.glob("runs/digits/*/seed*/metrics.csv")) == ran
    assert not list(archived.rglob("checkpoint*"))
    p = page_runs("replay", "--page", archived, "--to", second)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(base + [f"results={second}", "--", f"{second}/pages/smoke.md"], cwd=repo, check=True,
                       capture_output=True, text=True)
    jobs = job_counts(p.stdout + p.stderr)
    assert "run" not in jobs and jobs.get("results_page") == 1, jobs
    for name in ("digits.csv", "digits.md"):
        assert (second / "tables" / name).read_bytes() == (first / "tables" / name).read_bytes(), name
    assert (second / "pages" / "smoke.md").read_text() == (first / "pages" / "smoke.md").read_text()
    assert sorted(p.relative_to(second / "pages") for p in (second / "pages").rglob("*.csv")) == \
        sorted(p.relative_to(first / "pages") for p in (first / "pages").rglob("*.csv"))
    # the same in one step: rebuild replays, checks that nothing would compute, and builds the page
    rebuild = ["rebuild", "--tier", "workflows/config/smoke.yaml", page, "--config", "only=[digits]",
               "methods=[decomfl*]", "--repo", repo]
    p = page_runs(*rebuild, "--page", archived, "--to", tmp_path / "rebuilt")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "rebuilt" / "pages" / "smoke.md").read_text() == (first / "pages" / "smoke.md").read_text()

    # the same tier stopped on one machine and carried to another: what `save` kept of it, less one reported run
    # still going when it stopped, replayed into an empty folder; the workflow runs that one run, and nothing else,
    # and its table is the uninterrupted one's, cell for cell
    saved, third = tmp_path / "saved", tmp_path / "third"
    assert page_runs("save", "--results", first, "--to", saved).returncode == 0
    kept = {p.relative_to(saved) for p in saved.rglob("*") if p.is_file()}
    paged = {p.relative_to(archived) for p in archived.rglob("*")
             if p.is_file() and p.relative_to(archived).parts[0] in ("runs", "tuning")}
    assert paged <= kept and {str(p) for p in kept - paged} == {f"runs/zeta/hiso/seed0/{f}" for f in
                                                                ("metrics.csv", "run.json")}  # the tier's zeta run
    shutil.rmtree(saved / ran[0].parent)
    p = page_runs(*rebuild, "--page", saved, "--to", tmp_path / "refused")  # a run is missing: nothing is built
    assert p.returncode == 1 and "would compute (run: 1)" in p.stderr, p.stderr[-3000:]
    assert not (tmp_path / "refused" / "pages").exists()
    assert page_runs("replay", "--page", saved, "--to", third).returncode == 0
    p = subprocess.run(base + [f"results={third}", "--", f"{third}/tables/digits.csv"], cwd=repo, check=True,
                       capture_output=True, text=True)
    assert job_counts(p.stdout + p.stderr).get("run") == 1
    p = subprocess.run([sys.executable, str(ROOT / "workflows" / "scripts" / "compare_tables.py"), first / "tables",
                        third / "tables"], capture_output=True, text=True)  # the rerun run's times are its own
    assert p.returncode == 0 and "every cell matches except measured times" in p.stdout, p.stdout


def test_save_carries_a_study_tier_s_finished_jobs_and_a_scan_in_progress(tmp_path):
    """A study tier (<results>/study: the curvature study's jobs): a finished tuning job's CSV and choice and every
    evaluation CSV are saved; a scan still going is saved as its measured points (.partial.jsonl), which are dropped
    from the saved folder once the scan has ended; a replay writes the evaluations newer than the choices."""
    results, saved, again = tmp_path / "results", tmp_path / "saved", tmp_path / "again"
    tune = results / "study" / "tuning" / "p"
    tune.mkdir(parents=True)
    (tune / "identity.csv").write_text("lr,final\n0.1,1.0\n")
    (tune / "identity.json").write_text('{"lr": 0.1}')
    (tune / "diagonal.csv.partial.jsonl").write_text('{"job": 1}\n{"lr": 0.1, "cap": null, "row": {}}\n')
    (tune / "stein.csv").write_text("lr,final\n")  # its choice not yet written: not finished
    ev = results / "study" / "eval" / "p" / "identity"
    ev.mkdir(parents=True)
    (ev / "tuned-seed0.csv").write_text("seed,final\n0,1.0\n")
    p = page_runs("save", "--results", results, "--to", saved)
    assert p.returncode == 0 and "saved 2 finished runs and jobs" in p.stdout and "(2 new or changed)" in p.stdout, \
        p.stdout + p.stderr
    kept = sorted(str(f.relative_to(saved / "study")) for f in saved.rglob("*") if f.is_file())
    assert kept == ["eval/p/identity/tuned-seed0.csv", "tuning/p/diagonal.csv.partial.jsonl",
                    "tuning/p/identity.csv", "tuning/p/identity.json"]
    (tune / "diagonal.csv.partial.jsonl").unlink()  # the scan ended: its outputs are written, its points removed
    (tune / "diagonal.csv").write_text("lr,final\n0.1,2.0\n")
    (tune / "diagonal.json").write_text('{"lr": 0.1}')
    p = page_runs("save", "--results", results, "--to", saved)
    assert "saved 3 finished runs and jobs" in p.stdout and "(1 new or changed)" in p.stdout, p.stdout
    assert not list(saved.rglob("*.partial.jsonl"))
    p = page_runs("replay", "--page", saved, "--to", again)
    assert p.returncode == 0 and "replayed 3 runs and jobs" in p.stdout, p.stderr
    choice, evaluation = again / "study/tuning/p/identity.json", again / "study/eval/p/identity/tuned-seed0.csv"
    assert evaluation.stat().st_mtime > choice.stat().st_mtime
    assert (again / "study/tuning/p/diagonal.csv").read_text() == "lr,final\n0.1,2.0\n"



def test_verify_runs_agrees_with_a_real_run_and_names_a_changed_cell(tmp_path):
    """verify_runs.py reruns a run's first rounds from its run.json: a run the code computed agrees (exit 0); a
    train loss or an initial evaluation that the code does not compute is named (exit 1); no runs: exit 2."""
    from conftest import make_config, workflow_script

    from hiso.run import run
    verify = workflow_script("verify_runs")
    page = tmp_path / "page"
    for method, curvature in (("decomfl", "identity"), ("hiso", "diagonal")):
        cfg = make_config(name=f"q-{method}", method=method, curvature={"kind": curvature},
                          task={"name": "quadratic", "dim": 50}, federation={"rounds": 6, "lr": 0.02})
        run(cfg, page / "runs" / "q" / method / "seed0")
    assert verify.main([str(page), "--rounds", "4"]) == 0
    metrics = page / "runs" / "q" / "hiso" / "seed0" / "metrics.csv"
    rows = metrics.read_text().splitlines()
    head, third = rows[0].split(","), rows[3].split(",")
    col = head.index("train_loss")
    assert third[0] == "3"
    third[col] = repr(float(third[col]) * (1 + 2 ** -40))  # a last-bit change in round 3
    metrics.write_text("\n".join(rows[:3] + [",".join(third)] + rows[4:]) + "\n")
    assert verify.main([str(page), "--rounds", "2"]) == 0  # the change lies past the rounds rerun
    assert verify.main([str(page), "--rounds", "4"]) == 1
    info_path = page / "runs" / "q" / "decomfl" / "seed0" / "run.json"
    info = json.loads(info_path.read_text())
    key = next(iter(info["initial_eval"]))
    computed = info["initial_eval"][key]
    info["initial_eval"][key] = computed * (1 + 2 ** -40)
    info_path.write_text(json.dumps(info))
    assert verify.check(info_path.parent, 1) == [f"{info_path.parent}: initial evaluation {key}: "
                                                 f"{info['initial_eval'][key]!r} recorded, {computed!r} now"]
    (changed,) = verify.check(metrics.parent, 4)
    assert changed.startswith(f"{metrics.parent}: round 3 train_loss: {third[col]} recorded, ")
    assert verify.main([str(tmp_path / "empty")]) == 2


def test_verify_runs_refuses_a_config_whose_hash_moved(tmp_path):
    from conftest import make_config, workflow_script

    from hiso.run import run
    verify = workflow_script("verify_runs")
    cfg = make_config(name="q", method="decomfl", task={"name": "quadratic", "dim": 20}, federation={"rounds": 2})
    folder = tmp_path / "runs" / "q" / "decomfl" / "seed0"
    run(cfg, folder)
    info = json.loads((folder / "run.json").read_text())
    info["config_hash"] = "0" * 16
    (folder / "run.json").write_text(json.dumps(info))
    diffs = verify.check(folder, 1)
    assert len(diffs) == 1 and "hashes to" in diffs[0] and "0" * 16 in diffs[0]


def test_verify_runs_reruns_a_saved_study_evaluation_and_names_a_changed_cell(tmp_path):
    """A saved study (<folder>/study): the quickest evaluation of each problem and method is rerun as the workflow's
    study_eval job runs it, at the saved choice; it agrees (0), a changed cell is named (1), no --tier is refused
    (2)."""
    import yaml
    from conftest import workflow_script
    verify = workflow_script("verify_runs")
    tier = {"seeds": [0], "study": {
        "reference": "identity",
        "methods": {"identity": {"label": "identity (DeComFL)", "sets": {"curvature.kind": "identity"}},
                    "diagonal": {"label": "diagonal (HiSo)", "sets": {"curvature.kind": "diagonal"}}},
        "problems": {"q": {"label": "q d=20", "task": {"name": "quadratic", "dim": 20}, "rounds": 40, "target": 0.1,
                           "metric": "rel_suboptimality", "eval_every": 10, "grid": [0.01, 0.1],
                           "methods": ["identity", "diagonal"], "equal_lr": ["diagonal"]}}}}
    (tmp_path / "tier.yaml").write_text(yaml.safe_dump(tier))
    saved = tmp_path / "saved"
    for method in ("identity", "diagonal"):
        (saved / "study" / "tuning" / "q").mkdir(parents=True, exist_ok=True)
        (saved / "study" / "tuning" / "q" / f"{method}.json").write_text(json.dumps({"lr": 0.05}))
    jobs = [("identity", "tuned"), ("diagonal", "equal-lr")]
    for method, protocol in jobs:
        p = subprocess.run([sys.executable, "-m", "bench.curvature_study", "eval", "--problem",
                            json.dumps({**tier["study"]["problems"]["q"], "name": "q"}), "--method",
                            json.dumps({"name": method, **tier["study"]["methods"][method]}), "--protocol", protocol,
                            "--seed", "0", "--lr-from", str(saved / "study" / "tuning" / "q" / f"{method}.json"),
                            "--csv", str(saved / "study" / "eval" / "q" / method / f"{protocol}-seed0.csv")],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
    assert verify.main([str(saved), "--tier", str(tmp_path / "tier.yaml")]) == 0
    assert verify.main([str(saved)]) == 2
    # the equal-lr job reads the reference's choice: a changed choice of DeComFL's changes its rerun
    (saved / "study" / "tuning" / "q" / "identity.json").write_text(json.dumps({"lr": 0.04}))
    job = saved / "study" / "eval" / "q" / "diagonal" / "equal-lr-seed0.csv"
    diffs = verify.check_study(job, saved, tier)
    assert f"{job}: lr: 0.05 saved, 0.04 now" in diffs
    assert verify.main([str(saved), "--tier", str(tmp_path / "tier.yaml")]) == 1


def test_verify_runs_accepts_a_run_that_diverges_where_it_did_and_names_one_that_did_not(tmp_path):
    from conftest import make_config, workflow_script

    from hiso.run import RunFailed, run
    verify = workflow_script("verify_runs")
    folder = tmp_path / "runs" / "q" / "decomfl@50" / "seed0"
    cfg = make_config(name="q", method="decomfl", task={"name": "quadratic", "dim": 20},
                      federation={"rounds": 20, "lr": 50.0})
    with pytest.raises(RunFailed):
        run(cfg, folder)
    assert json.loads((folder / "run.json").read_text())["status"] == "diverged"
    assert verify.check(folder, 5) == [] and verify.check(folder, 2) == []
    info = json.loads((folder / "run.json").read_text())
    info["status"] = "complete"  # a page that holds it as complete: the code diverges instead
    (folder / "run.json").write_text(json.dumps(info))
    (diff,) = verify.check(folder, 5)
    assert "diverged now within" in diff and "complete recorded" in diff


def test_verify_runs_checks_a_published_study_page_through_its_split(tmp_path):
    """A published study page (eval.csv, tuning.csv) is split into its jobs' outputs (the tuning protocol replayed
    on its rows) and its quickest evaluations rerun: the page the jobs wrote agrees; a number in it that the code
    does not compute is named."""
    import pandas as pd
    import yaml
    from conftest import workflow_script
    verify = workflow_script("verify_runs")
    tier = {"seeds": [0, 1], "tuning_seed": 100, "study": {
        "reference": "identity",
        "methods": {"identity": {"label": "identity (DeComFL)", "sets": {"curvature.kind": "identity"}}},
        "problems": {"q": {"label": "q d=20", "task": {"name": "quadratic", "dim": 20}, "rounds": 40, "target": 0.1,
                           "metric": "rel_suboptimality", "eval_every": 10, "grid": [0.03, 0.1, 0.3],
                           "methods": ["identity"], "equal_lr": []}}}}
    (tmp_path / "tier.yaml").write_text(yaml.safe_dump(tier))
    jobs = tmp_path / "jobs"
    problem = json.dumps({**tier["study"]["problems"]["q"], "name": "q"})
    method = json.dumps({"name": "identity", **tier["study"]["methods"]["identity"]})
    choice = jobs / "tuning" / "q" / "identity.json"
    cs = [sys.executable, "-m", "bench.curvature_study"]
    p = subprocess.run(cs + ["tune", "--problem", problem, "--method", method, "--seed", "100", "--csv",
                             str(choice.with_suffix(".csv")), "--json", str(choice)], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    for seed in (0, 1):
        p = subprocess.run(cs + ["eval", "--problem", problem, "--method", method, "--protocol", "tuned", "--seed",
                                 str(seed), "--lr-from", str(choice), "--csv", str(jobs / f"eval{seed}.csv")],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
    page = tmp_path / "page"
    page.mkdir()
    pd.concat([pd.read_csv(jobs / f"eval{s}.csv") for s in (0, 1)]).to_csv(page / "eval.csv", index=False)
    pd.read_csv(choice.with_suffix(".csv")).to_csv(page / "tuning.csv", index=False)
    assert verify.main([str(page), "--tier", str(tmp_path / "tier.yaml")]) == 0
    ev = pd.read_csv(page / "eval.csv")
    assert ev["final"].between(0, 1e9, inclusive="neither").all()
    ev["final"] *= 1 + 2 ** -40  # every run's final value, moved in its last bits
    ev.to_csv(page / "eval.csv", index=False)
    assert verify.main([str(page), "--tier", str(tmp_path / "tier.yaml")]) == 1
