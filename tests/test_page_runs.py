"""A page's runs committed beside it (`page: {runs: true}`, workflows/scripts/page_runs.py): the page rule archives
every run and choice it stands on, and a replay of them makes the workflow rebuild the same tables and page without
computing a round."""
import json
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
    assert p.returncode == 0 and "replayed 4 runs" in p.stdout, p.stderr
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
