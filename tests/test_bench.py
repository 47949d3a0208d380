"""The benchmark scripts stay runnable (their quick parts), and what they print is what they measured."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_perf_bytes_part_measures_the_wire(tmp_path):
    subprocess.run([sys.executable, "bench/perf.py", "--only", "bytes", "--out", str(tmp_path / "p")], cwd=ROOT,
                   check=True, capture_output=True, text=True)
    df = pd.read_csv(tmp_path / "p_bytes.csv").set_index("method")
    # vector methods: header only on top of 4*d bytes; scalar-only: 76 B up for 2 clients (headers + 20 B each)
    assert (df.loc[["fedzo", "fedavg", "fedadam"], "up_ratio"] < 1.001).all()
    assert df.loc["hiso", "bytes_up"] == df.loc["decomfl", "bytes_up"] == 2 * (18 + 5 * 4)


def test_curvature_study_quick_pass(tmp_path):
    out = tmp_path / "cs"
    subprocess.run([sys.executable, "bench/curvature_study.py", "--only", "d=100 ", "--quick",
                    "--methods", "identity,diagonal", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    ev = pd.read_csv(f"{out}_eval.csv")
    assert set(ev.method) == {"identity (DeComFL)", "diagonal (HiSo)"}
    tuned = ev[ev.protocol == "tuned"]
    hiso = tuned[tuned.method == "diagonal (HiSo)"].iloc[0]
    assert -1 <= hiso["H_spearman"] <= 1 and hiso["H_zeta"] > 0
    # each method is evaluated at the step size that won its tuning runs (on the held-out seed 100)
    tune = pd.read_csv(f"{out}_tuning.csv")
    for m, grp in tuned.groupby("method"):
        t = tune[tune.method == m].assign(r=lambda d: d["rounds"].astype(float)).sort_values(["r", "final"])
        assert grp.lr.iloc[0] == t.lr.iloc[0]
