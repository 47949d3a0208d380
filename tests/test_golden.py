"""Golden runs: the same config and seed give the same bits on any x86-64 CPU (hiso/numerics.py).

Short runs that cover the kernels the CPU tiers use (tests/golden/*.yaml: the quadratic, the digits CNN's
convolutions, SmolLM2 + LoRA's forward and its backward passes under FedAvg, a first-order baseline on digits)
were run once under the portable numerics and their whole metrics.csv committed (tests/golden/regenerate.py;
made-on.json says on which CPU).  Here they run again on whatever machine runs the tests and must match every cell bit for bit, except the
measured times (`wall_seconds`, `cpu_seconds`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hiso.config import load_config
from hiso.results import reproducible
from hiso.run import run

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = sorted(p.stem for p in GOLDEN.glob("*.yaml"))
SLOW = {"smollm2-lora-fedavg", "smollm2-lora-hiso"}


def _cells(path: Path) -> pd.DataFrame:
    # every cell as the text the CSV holds: float columns compare by their 17-digit repr, i.e. bit for bit
    return reproducible(pd.read_csv(path, dtype=str, keep_default_na=False))


def test_every_golden_config_has_its_metrics():
    assert CONFIGS == ["digits-fedavg", "digits-hiso", "quadratic-hiso", "quadratic-lognormal-hiso",
                       "smollm2-lora-fedavg", "smollm2-lora-hiso"]
    for name in CONFIGS:
        assert (GOLDEN / f"{name}.metrics.csv").is_file(), name
    made = json.loads((GOLDEN / "made-on.json").read_text())
    assert sorted(made) == CONFIGS
    assert all(m["numerics"]["bit_identical_across_cpus"] for m in made.values())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_golden_run_is_bit_identical(name, tmp_path):
    res = run(load_config(GOLDEN / f"{name}.yaml"), tmp_path / name)
    assert res.status == "complete"
    info = json.loads((tmp_path / name / "run.json").read_text())
    assert info["numerics"]["bit_identical_across_cpus"], info["numerics"]  # the tests run pinned (conftest)
    got, want = _cells(tmp_path / name / "metrics.csv"), _cells(GOLDEN / f"{name}.metrics.csv")
    assert list(got.columns) == list(want.columns)
    diff = got.ne(want)
    rows, cols = diff.to_numpy().nonzero()
    where = [(got["round"].iloc[r], got.columns[c]) for r, c in zip(rows, cols)]
    assert not where, (f"{name}: {len(where)} cells differ from tests/golden/{name}.metrics.csv on this CPU "
                       f"({info['numerics']['cpu']['model']}), first at (round, column) {where[:5]}")
