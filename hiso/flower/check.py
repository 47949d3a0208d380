"""Run one config in the simulator and over Flower, and check that the two runs are the same run: every metric
and byte count of metrics.csv, the round log byte for byte, the server model and the curvature bitwise, and
every client's replica (the deployment's final sync).

    python -m hiso.flower.check --config workflows/config/base/smollm2_rotten_tomatoes_lora.yaml \\
        --set federation.num_clients=3 --set federation.rounds=3 --out results/flower-check

Exit 0 when equal; 1 with the first difference otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TRANSPORT = ("flower_bytes_down", "flower_bytes_up", "exchange_seconds", "exchange_started_at", "dropped_clients",
             "client_start_seconds", "client_load_seconds", "client_compute_seconds", "client_save_seconds")


def differences(sim: Path, dep: Path) -> list[str]:
    """What differs between a simulator run folder and a deployed one (empty: the same run)."""
    import pandas as pd
    import torch

    from ..results import reproducible
    out = []
    a, b = pd.read_csv(sim / "metrics.csv"), pd.read_csv(dep / "metrics.csv")
    b = b.drop(columns=[c for c in TRANSPORT if c in b.columns])
    a, b = reproducible(a), reproducible(b)
    if list(a.columns) != list(b.columns) or not a.equals(b):
        out.append(f"metrics.csv differs:\n{a.compare(b) if list(a.columns) == list(b.columns) else (a.columns, b.columns)}")
    x = torch.load(sim / "checkpoint.pt", weights_only=False)["federation"]
    y = torch.load(dep / "checkpoint.pt", weights_only=False)["federation"]
    if x["log"] != y["log"]:
        out.append("the round logs differ")
    if not all(torch.equal(p, q) for p, q in zip(x["server_params"], y["server_params"], strict=True)):
        out.append("the server models differ")
    if not all(torch.equal(p, q) for p, q in zip(x["curvature"]["state"], y["curvature"]["state"], strict=True)):
        out.append("the curvatures differ")
    replicas = json.loads((dep / "flower" / "outcome.json").read_text()).get("replicas_equal_server") or {}
    if not replicas or not all(replicas.values()):
        out.append(f"client replicas equal to the server: {replicas}")
    return out


def main(argv: list[str] | None = None) -> int:
    from ..config import load_config
    from ..run import run
    ap = argparse.ArgumentParser(prog="python -m hiso.flower.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", required=True, help="writes <out>/simulator and <out>/flower")
    a = ap.parse_args(argv)
    out = Path(a.out)
    for engine in ("simulator", "flower"):
        cfg = load_config(a.config, [*a.set, f"federation.engine={engine}", "run.progress=false"])
        run(cfg, out / engine, replace_different=True)
    diff = differences(out / "simulator", out / "flower")
    print("\n".join(diff) if diff else f"the same run: metrics, round log, server model, curvature and every client's "
                                      f"replica are equal ({out / 'simulator'} vs {out / 'flower'})")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
