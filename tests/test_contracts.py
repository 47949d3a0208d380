"""Every registered method implements the runner's contract (hiso/contracts.py) and reports the fixed columns
first, in one order."""
import dataclasses

import pytest

from hiso.config import load_config
from hiso.contracts import Method, RoundRow
from hiso.methods import METHODS, load_baselines
from hiso.run import build_federation

load_baselines()
FIXED = [f.name for f in dataclasses.fields(RoundRow) if f.name != "extra"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_honours_the_contract(name):
    cfg = load_config(data={"method": name, "task": {"name": "quadratic", "dim": 20},
                            "federation": {"rounds": 2, "lr": 1e-3}, "run": {"progress": False}})
    method, _ = build_federation(cfg)
    assert isinstance(method, Method)
    row = method.run_round()
    assert list(row)[:len(FIXED)] == FIXED and row["round"] == 1 and method.rounds_done == 1
