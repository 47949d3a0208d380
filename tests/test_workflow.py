"""The Snakemake workflow end to end on the smoke tier: every table and figure is produced and non-empty,
and a second invocation has nothing to do."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def test_smoke_dag_end_to_end(tmp_path):
    out = tmp_path / "results"
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", "workflows/config/smoke.yaml", "--config", f"results={out}", "-q"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    for exp, methods in {"quadratic": 3, "digits": 2}.items():
        table = pd.read_csv(out / "tables" / f"{exp}.csv")
        assert len(table) == methods and (table["seeds"] == 2).all()
        assert (out / "tables" / f"{exp}.md").stat().st_size > 0
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"convergence_{exp}.{ext}").stat().st_size > 1000
    dry = subprocess.run(cmd + ["-n"], cwd=ROOT, check=True, capture_output=True, text=True)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_every_tier_plans_offline(tmp_path):
    """Each tier's config validates and its DAG plans (dry run) without touching the network."""
    for tier, runs in (("default", 21), ("smoke", 10), ("lm", 2)):
        p = subprocess.run([SNAKEMAKE, "-n", "--configfile", f"workflows/config/{tier}.yaml", "--config",
                            f"results={tmp_path / tier}"], cwd=ROOT, capture_output=True, text=True, check=True)
        counts = dict(line.split()[:2] for line in p.stdout.splitlines()
                      if len(line.split()) == 2 and line.split()[1].isdigit())
        assert int(counts["run"]) == runs, (tier, p.stdout[-500:])
