"""What "scalar-only" buys once a real framework carries it: bytes at every layer and time per round, measured on
a Flower deployment on 127.0.0.1 (SuperLink + 3 SuperNodes, 2 clients sampled per round, P = 5, tau = 1).

Layers, per round (both directions, the 2 sampled clients together):
  (a) payload in the papers' convention: the scalars (4 B each) up, and as many aggregated scalars down;
      for FedAvg/FedZO the d floats of the model down and of the update up;
  (b) hiso/protocol.py messages with their headers (seeds, catch-up records): what the simulator counts;
  (c) Flower's serialised messages (Message + RecordDict protobuf), as the ServerApp sends and receives them;
  (d) TCP bytes between the SuperNodes and the SuperLink through a counting proxy, in the round's window,
      minus the idle polling rate (measured before the run with the SuperNodes connected and idle).
FedAvg/FedZO rows come from hiso/flower/probe.py: their d-sized messages over the same transport, no training.
The perf tier runs it as its `flower` job (python -m bench.perf --only flower --rounds 5); by hand:

    python -m bench.flower_bytes --rounds 5 --only quadratic     # about 10-15 minutes on 2 cores for both problems
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from pathlib import Path

import pandas as pd

from hiso.config import load_config
from hiso.flower.deploy import deploy

ROOT = Path(__file__).resolve().parents[1]
FED = {"num_clients": 3, "clients_per_round": 2, "perturbations": 5, "local_steps": 1, "engine": "flower",
       "round_timeout": 300.0}
PROBLEMS = {
    "quadratic-d1000": {"task": {"name": "quadratic", "dim": 1000, "spectrum": "power", "effective_rank": 10.0},
                         "federation": {**FED, "lr": 0.03}},
    "smollm2-lora": {  # LoRA r8 on q and v: 460,800 trainable parameters
        "task": {"name": "rotten_tomatoes", "model": "smollm2-135m-instruct", "trainable": "lora", "lora_rank": 8,
                 "lora_targets": "q_proj,v_proj", "train_size": 200, "dev_size": 20, "test_size": 20,
                 "max_length": 64, "eval_batch_size": 20},
        "federation": {**FED, "lr": 1e-2, "mu": 1e-2, "batch_size": 16}},
}
# "fedavg-transport": FedAvg / FedZO's d floats each way per client over the same transport, without training
METHODS = {"hiso": ("hiso", "hiso.flower.app"), "decomfl": ("decomfl", "hiso.flower.app"),
           "fedavg-transport": ("decomfl", "hiso.flower.probe")}


def tcp_in_window(tcp: pd.DataFrame, start: float, seconds: float) -> float:
    """Bytes (both directions) in [start, start + seconds), spreading each second's count over the second."""
    end, total = start + seconds, 0.0
    for s, up, down in tcp[["unix_second", "tcp_bytes_up", "tcp_bytes_down"]].itertuples(index=False):
        overlap = max(0.0, min(end, s + 1) - max(start, s))
        total += overlap * (up + down)
    return total


def measure(problem: str, method: str, rounds: int, work: Path) -> dict:
    name, module = METHODS[method]
    spec = PROBLEMS[problem]
    cfg = load_config(data={"method": name, "seed": 0, "task": spec["task"],
                            "federation": {**spec["federation"], "rounds": rounds},
                            "run": {"eval_every": rounds, "checkpoint_every": 0, "progress": False, "threads": 1}})
    out = work / f"{problem}-{method}".replace(" ", "_").replace("/", "_")
    deploy(cfg, out, idle_probe=20.0, module=module)
    m = pd.read_csv(out / "metrics.csv")
    tcp = pd.read_csv(out / "flower" / "tcp_per_second.csv")
    idle = json.loads((out / "flower" / "tcp_idle.json").read_text())
    idle_rate = (idle["up"] + idle["down"]) / idle["seconds"]
    m["tcp"] = [tcp_in_window(tcp, s, d) for s, d in zip(m["exchange_started_at"], m["exchange_seconds"])]
    m["tcp_minus_idle"] = m["tcp"] - idle_rate * m["exchange_seconds"]
    probe = module.endswith("probe")
    payload = (2 * m["array_bytes"] * m["answered"]) if probe else 2 * m["bytes_up_scalars"]
    row = {"problem": problem, "method": method, "rounds": len(m),
           "payload_B": payload.median(),
           "protocol_B": math.nan if probe else (m["bytes_up"] + m["bytes_down"]).median(),
           "flower_B": (m["flower_bytes_up"] + m["flower_bytes_down"]).median(),
           "tcp_B": m["tcp"].median(), "tcp_minus_idle_B": m["tcp_minus_idle"].median(),
           "idle_polling_B_per_s": idle_rate, "s_per_round": m["exchange_seconds"].median()}
    for k in ("start", "load", "compute", "save"):
        row[f"client_{k}_s"] = math.nan if probe else m[f"client_{k}_seconds"].median()
    return row


def measure_all(rounds: int, only: str | None = None) -> list[dict]:
    """Every problem (those whose name contains `only`) x method, one deployment each, in a temporary folder."""
    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in PROBLEMS:
            if only and only not in problem:
                continue
            for method in METHODS:
                rows.append(measure(problem, method, rounds, Path(tmp)))
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=None, help="problems whose name contains this text")
    args = ap.parse_args()
    print(pd.DataFrame(measure_all(args.rounds, args.only)).to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
