"""The Snakemake workflow end to end on the smoke tier: every table and figure is produced and non-empty,
and a second invocation has nothing to do."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import workflow_script

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DEFAULT_RUNS = 84


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow's files in a temporary folder, so that a test may edit them (never the tracked ones)."""
    dst = tmp_path / "repo"
    dst.mkdir()
    shutil.copy2(ROOT / "Snakefile", dst)
    for d in ("workflows", "figures", "paper_results", "hiso", "baselines", "bench", "docs"):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.slow
def test_smoke_dag_end_to_end(tmp_path):
    repo = workflow_copy(tmp_path)
    out = tmp_path / "results"
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", "workflows/config/smoke.yaml", "--config", f"results={out}", "-q"]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True)
    for exp, methods in {"quadratic": 3, "digits": 3}.items():
        table = pd.read_csv(out / "tables" / f"{exp}.csv")
        assert len(table) == methods and (table["seeds"] == 2).all()  # tuning runs are not reported
        assert (out / "tables" / f"{exp}.md").stat().st_size > 0
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"convergence_{exp}.{ext}").stat().st_size > 1000
    # digits' DeComFL lr grid: each lr also ran at the tuning seed on the dev split, and that run chose
    digits = pd.read_csv(out / "tables" / "digits.csv").set_index("method")
    grid = digits.loc[["decomfl@0.01", "decomfl@0.03"]]
    assert grid["best lr"].sum() == 1 and (grid["lr chosen on"] == "tuning seed 100 (dev split)").all()
    for m in grid.index:
        cfg = json.loads((out / "runs" / "digits" / m / "seed100" / "run.json").read_text())["config"]
        assert cfg["run"]["eval_split"] == "dev" and cfg["task"]["dev_fraction"] == 0.15 and cfg["seed"] == 100
        tuned = pd.read_csv(out / "runs" / "digits" / m / "seed100" / "metrics.csv")
        assert grid.loc[m, "tuning final accuracy"] == tuned["accuracy"].dropna().iloc[-1]
    best = grid[grid["best lr"]].iloc[0]
    other = grid[~grid["best lr"]].iloc[0]
    assert (best["tuning rounds to target"], -best["tuning final accuracy"]) <= \
        (other["tuning rounds to target"], -other["tuning final accuracy"])
    cfg0 = json.loads((out / "runs" / "digits" / "decomfl@0.01" / "seed0" / "run.json").read_text())["config"]
    assert cfg0["run"]["eval_split"] == "test" and cfg0["task"]["dev_fraction"] == 0.0
    for fig in ("curvature_histogram_digits", "zeta"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    zeta = pd.read_csv(out / "tables" / "zeta.csv")
    assert zeta["value"].gt(0).all() and len(zeta) == 6
    dry = subprocess.run(cmd + ["-n"], cwd=repo, check=True, capture_output=True, text=True)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # editing one figure script reruns only that figure (snakemake >= 9.18 compares checksums: a real edit)
    script = repo / "figures" / "curvature_histogram.py"
    script.write_text(script.read_text() + "# an edit\n")
    dry = subprocess.run(cmd[:-1] + ["-n"], cwd=repo, check=True, capture_output=True, text=True)
    jobs = job_counts(dry.stdout)
    assert set(jobs) - {"all", "total"} == {"curvature_histogram"}, jobs
    # a module the figure scripts import is an input of every figure rule, and the jobs import the copy's own
    # code, not the installed package of another checkout
    style = repo / "figures" / "style.py"
    style.write_text(style.read_text() + "\nPath(__file__).with_name('imported.txt').write_text(__file__)\n")
    dry = subprocess.run(cmd[:-1] + ["-n"], cwd=repo, check=True, capture_output=True, text=True)
    assert {"convergence_figure", "curvature_histogram", "zeta_figure"} <= set(job_counts(dry.stdout))
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True)
    assert (repo / "figures" / "imported.txt").read_text() == str(style)


# the "Job stats" table of a snakemake run or dry run, {rule: count}, read as page_runs.py rebuild reads it
job_counts = workflow_script("page_runs").job_counts


def test_every_tier_plans_offline(tmp_path):
    """Each tier's config validates and its DAG plans (dry run) without touching the network."""
    # lm: HiSo and DeComFL 5 seeds + twins on 2, 7 methods on 3 seeds + a twin on 1: 10 + 4 + 21 + 7
    for tier, runs in (("default", DEFAULT_RUNS), ("smoke", 17), ("lm", 42), ("ablations", 649), ("paper", 1232)):
        p = subprocess.run([SNAKEMAKE, "-n", "--configfile", f"workflows/config/{tier}.yaml", "--config",
                            f"results={tmp_path / tier}"], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert job_counts(p.stdout)["run"] == runs, (tier, p.stdout[-500:])
    p = subprocess.run([SNAKEMAKE, "-n", "--configfile", "workflows/config/curvature.yaml", "--config",
                        f"results={tmp_path / 'curvature'}"], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert job_counts(p.stdout) == {"study_tune": 64, "study_eval": 258, "study_report": 1, "all": 1, "total": 324}
    # every run from the checkout loads the workflow profile that re-plans waiting jobs every 10 s, not every second
    assert "Using workflow specific profile profiles/default" in p.stdout + p.stderr
    # the overlay its next page runs with: twins on seed 0, 10 seeds where runs are cheap; the page names both files
    p = subprocess.run([SNAKEMAKE, "-n", "-p", "--configfile", "workflows/config/curvature.yaml",
                        "workflows/config/overlays/curvature-twins.yaml", "--config",
                        f"results={tmp_path / 'curvature'}"],
                       cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert job_counts(p.stdout) == {"study_tune": 64, "study_eval": 777, "study_report": 1, "all": 1, "total": 843}
    assert ("--command 'snakemake --cores all --configfile workflows/config/curvature.yaml "
            "workflows/config/overlays/curvature-twins.yaml'") in p.stdout


def test_paper_tier_plans_the_grid_on_gpus(tmp_path):
    p = subprocess.run([SNAKEMAKE, "-n", "--configfile", "workflows/config/paper.yaml", "--config",
                        f"results={tmp_path}", "--profile", "workflows/profiles/local"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    for exp in ("hiso-opt-2.7b-squad", "hiso-opt-125m-qqp", "decomfl-opt-125m-wsc", "llama-llama-3.2-1b-sst2"):
        assert f"runs/{exp}/hiso/seed2/metrics.csv" in p.stdout
    assert "gpu=1" in p.stdout and "paper_side_by_side" in p.stdout


def test_config_schema_rejects_unknown_keys_and_wrong_types(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, msg in (("seeds: [0]\nexperimentz: {}\n", "experimentz"),
                      ("seeds: zero\nexperiments: {}\n", "seeds"),
                      ("seeds: [0]\nexperiments: {q: {base: b.yaml, metric: m, target: x, methods: {a: {}}}}\n",
                       "target"),
                      ("experiments: {}\n", "'seeds' is a dependency of 'experiments'"),
                      ("perf: {title: t, jobs: {b: {part: bites}}}\n", "bites")):
        bad.write_text(text)
        p = subprocess.run([SNAKEMAKE, "-n", "--configfile", str(bad)], cwd=ROOT, capture_output=True, text=True)
        assert p.returncode != 0 and msg in p.stdout + p.stderr, p.stdout + p.stderr


def test_lint_is_clean():
    for tier in ("default", "ablations", "paper"):
        p = subprocess.run([SNAKEMAKE, "--lint", "--configfile", f"workflows/config/{tier}.yaml"], cwd=ROOT,
                           capture_output=True, text=True)
        assert p.returncode == 0 and "Congratulations" in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]


def test_paper_side_by_side_fills_only_what_ran(tmp_path):
    """The comparison script puts regenerated numbers beside reported ones and leaves unrun cells empty."""
    table = tmp_path / "t.csv"
    pd.DataFrame([{"method": "hiso", "seeds": 3, "final accuracy mean": 0.8, "final accuracy std": 0.01,
                   "bytes per round (mean)": 100.0, "rounds": 10, "rounds to decomfl's best (median)": 5.0,
                   "rounds to best (median)": 8.0, "payload bytes per client-round": 40.0}]
                 ).to_csv(table, index=False)
    out = tmp_path / "side.csv"
    subprocess.run([sys.executable, "workflows/scripts/compare_paper.py", "--reported", "paper_results/reported.csv",
                    "--tables", str(table), "--keys", "opt-125m:sst2", "--csv", str(out), "--md", str(tmp_path / "s.md")],
                   cwd=ROOT, check=True, capture_output=True)
    df = pd.read_csv(out)
    hit = df[(df.model == "opt-125m") & (df.task == "sst2") & (df.method == "hiso") & (df.source == "HiSo Table 3")]
    assert hit["regenerated"].tolist() == [0.8] and hit["regenerated wire bytes (whole budget)"].tolist() == [1000.0]
    assert hit["regenerated paper-convention bytes"].tolist() == [320.0]  # 40 B x 8 rounds to its best
    assert hit["value"].tolist() == [0.8555]
    assert df["regenerated"].notna().sum() == 1  # nothing else was run


def test_config_overrides_inside_lists_and_mappings_are_typed_as_in_a_tier_file(tmp_path):
    """Snakemake types only a top-level `--config` value: `seeds=[0]` would reach the schema as ['0'] and be refused.
    The workflow reads such strings as a tier file would where the schema wants a number or a boolean; a string
    that is none (or a YAML 1.1 form) is still refused, naming the key."""
    from hiso.checks import typed_overrides
    schema = {"properties": {
        "seeds": {"type": "array", "items": {"type": "integer"}},
        "rounding": {"anyOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "integer"}}]},
        "study": {"type": "object", "properties": {"quick": {"type": "boolean"}, "title": {"type": "string"}},
                  "additionalProperties": {"type": "object", "properties": {"lr": {"type": "number"}}}},
        "methods": {"type": "array", "items": {"type": "string"}}}}
    config = {"seeds": ["0", "12", "010", "a"], "rounding": ["0"], "methods": ["1", "hiso"],
              "study": {"quick": "True", "title": "7", "p": {"lr": "1e-3"}}, "untouched": ["5"]}
    typed_overrides(config, {"seeds": 0, "rounding": 0, "methods": 0, "study": 0}, schema)
    assert config["seeds"] == [0, 12, "010", "a"] and config["rounding"] == [0] and config["methods"] == ["1", "hiso"]
    assert config["study"] == {"quick": True, "title": "7", "p": {"lr": 0.001}} and config["untouched"] == ["5"]
    config = {"study": {"quick": "yes"}}
    typed_overrides(config, {"study": 0}, schema)
    assert config["study"]["quick"] == "yes"  # YAML 1.1's booleans are not read as booleans

    def plan(*sets):
        return subprocess.run([SNAKEMAKE, "-n", "--configfile", "workflows/config/smoke.yaml", "--config",
                               f"results={tmp_path}", *sets], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    every, one = plan(), plan("seeds=[0]")
    assert every.returncode == 0 and one.returncode == 0, one.stdout[-1500:] + one.stderr[-1500:]
    assert 0 < job_counts(one.stdout)["run"] < job_counts(every.stdout)["run"]
    bad = plan("seeds=[a]")
    assert bad.returncode != 0 and "'a' is not of type 'integer'" in bad.stdout + bad.stderr


def test_a_page_names_every_config_key_that_changes_what_runs_and_no_operational_one(tmp_path):
    """The command a results page states is one that rebuilds it: `seeds=[0]` given on the command line is in it
    beside the slice, `warm_runner` and `results` (how jobs start, where results go) are not."""
    p = subprocess.run([SNAKEMAKE, "-n", "-p", "--cores", "1", "--config", f"results={tmp_path}", "seeds=[0]",
                        "warm_runner=False", "only=[digits]"], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    command = re.search(r"--command '(.*?)' --commit", p.stdout).group(1)
    assert "only=[digits] seeds=[0]" in command and "warm_runner" not in command and "results" not in command
