"""Rewrite the golden runs' metrics (tests/golden/<name>.metrics.csv) and where they were made (made-on.json).

    .venv/bin/python tests/golden/regenerate.py

Each <name>.yaml here is run under the portable CPU numerics (hiso/numerics.py) through `python -m hiso run`,
the command a user types, and its whole metrics.csv is kept.  tests/test_golden.py reruns them and compares every
cell bit for bit except `wall_seconds`.  Rewrite them only when a change is meant to change the numbers, and say
so in the commit.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> int:
    env = {**os.environ, "HISO_NUMERICS": "portable", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    made = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in sorted(HERE.glob("*.yaml")):
            out = Path(tmp) / config.stem
            subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(config), "--out", str(out)],
                           check=True, env=env, cwd=ROOT)
            shutil.copyfile(out / "metrics.csv", HERE / f"{config.stem}.metrics.csv")
            info = json.loads((out / "run.json").read_text())
            made[config.stem] = {"git_sha": info["git_sha"], "git_dirty": info["git_dirty"],
                                 "packages": info["packages"], "numerics": info["numerics"]}
            print(f"{config.stem}: {info['numerics']['cpu']['model']}, "
                  f"bit_identical_across_cpus={info['numerics']['bit_identical_across_cpus']}")
    (HERE / "made-on.json").write_text(json.dumps(made, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
